package main

import (
	"fmt"
	"slices"
	"time"
)

// LeakCheck is one line of a soak's verdict.
type LeakCheck struct {
	Name   string
	OK     bool
	Detail string // the figures that decided it
}

// Leak thresholds. The margins absorb what a quiet gateway still holds
// because the load just ended (keep-alive connections, their goroutines
// and fds, a poller's database connection); a leak of one per request, or
// per second, is far beyond them within minutes.
const (
	goroutineMargin = 20   // or 10% of the baseline, if more
	fdMargin        = 10   // or 10%
	connMargin      = 3    // database connections in use, Redis connections
	heapGrowthMax   = 1.25 // last third over first third of the steady windows
	heapSlack       = 4 << 20
	// gateEntryBytes is the live heap allowed for each entry the
	// gateway's in-process gate gains: a list element, a map slot and the
	// key, about 180-200 bytes measured, with room.
	gateEntryBytes = 256
	p99GrowthMax   = 2.0
	// p99Slack keeps a p99 of a few milliseconds from failing the run
	// by one slow window's worth on a shared machine.
	p99Slack    = 5 * time.Millisecond
	outboxSlack = 50 // jobs; the outbox gauge is a reading up to 10 s old
)

// Verdict judges a soak's samples: the steady ones (taken after warmup,
// under load) and the quiet one (the last, after the drain). The first
// steady sample is the baseline the quiet one is compared with; the
// medians of the first and last thirds of the steady ones show whether
// the heap, the latency or the outbox climbed during the load. redisPool
// is the gateway's Redis pool size.
func Verdict(samples []Sample, warmup time.Duration, redisPool int) []LeakCheck {
	var steady []Sample
	for _, s := range samples {
		if !s.Quiet && s.At >= warmup {
			steady = append(steady, s)
		}
	}
	if len(steady) < 3 || !samples[len(samples)-1].Quiet {
		return []LeakCheck{{Name: "samples", Detail: fmt.Sprintf("%d steady samples after the %s warm-up and "+
			"a quiet one are needed; got %d samples", len(steady), warmup, len(samples))}}
	}
	base, quiet := steady[0], samples[len(samples)-1]
	first, last := thirds(steady)
	return []LeakCheck{
		backWithin("goroutines back after the load", quiet.Goroutines, base.Goroutines, goroutineMargin),
		backWithin("open fds back after the load", quiet.FDs, base.FDs, fdMargin),
		heapCheck(first, last),
		p99Check(first, last),
		dbCheck(samples, base, quiet),
		redisCheck(samples, base, quiet, redisPool),
		outboxCheck(first, last, quiet),
	}
}

// thirds returns the first and the last third of s (at least one each).
func thirds(s []Sample) (first, last []Sample) {
	k := max(1, len(s)/3)
	return s[:k], s[len(s)-k:]
}

// backWithin: quiet is at most base plus margin, or plus 10% of base if
// that is more.
func backWithin(name string, quiet, base, margin int) LeakCheck {
	limit := base + max(margin, base/10)
	return LeakCheck{Name: name, OK: quiet <= limit,
		Detail: fmt.Sprintf("quiet %d, baseline %d, limit %d", quiet, base, limit)}
}

// median of f over s.
func median[T int | int64 | time.Duration](s []Sample, f func(Sample) T) T {
	v := make([]T, len(s))
	for i, x := range s {
		v[i] = f(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// heapCheck judges the GC's heap goal (Sample.HeapGoal), not the heap in
// use: the latter swings up to twice the live heap with each GC cycle,
// so the medians of a few samples could differ by nearly that much with
// nothing growing. The gateway's in-process gate grows it too, bounded,
// until full (README, "make soak"): each entry it gained between the two
// thirds allows gateEntryBytes of live heap, times the goal's 1 + GOGC/100.
func heapCheck(first, last []Sample) LeakCheck {
	a := median(first, func(s Sample) int64 { return s.HeapGoal })
	b := median(last, func(s Sample) int64 { return s.HeapGoal })
	gained := median(last, func(s Sample) int { return s.GateEntries }) - median(first, func(s Sample) int { return s.GateEntries })
	gate := int64(max(gained, 0)) * gateEntryBytes * int64(100+last[len(last)-1].GOGC) / 100
	limit := int64(float64(a)*heapGrowthMax) + heapSlack + gate
	return LeakCheck{Name: "heap not climbing", OK: b <= limit,
		Detail: fmt.Sprintf("GC goal, median of the last third %s, of the first %s, limit %s (%s of it for the gate's %d new entries)",
			mib(b), mib(a), mib(limit), mib(gate), gained)}
}

func p99Check(first, last []Sample) LeakCheck {
	a := median(first, func(s Sample) time.Duration { return s.P99 })
	b := median(last, func(s Sample) time.Duration { return s.P99 })
	limit := max(time.Duration(float64(a)*p99GrowthMax), a+p99Slack)
	return LeakCheck{Name: "notification p99 not climbing", OK: b <= limit && b > 0,
		Detail: fmt.Sprintf("median window p99 of the last third %s, of the first %s, limit %s", ms(b), ms(a), ms(limit))}
}

// dbCheck: no sample has more connections open than the pools allow, and
// the ones in use are given back once the load ends (a leaked row set or
// transaction holds its connection for good).
func dbCheck(all []Sample, base, quiet Sample) LeakCheck {
	worst := all[0]
	for _, s := range all {
		if s.DBOpen-s.DBMax > worst.DBOpen-worst.DBMax {
			worst = s
		}
	}
	limit := base.DBInUse + connMargin
	return LeakCheck{Name: "database connections within the pools", OK: worst.DBOpen <= worst.DBMax && quiet.DBInUse <= limit,
		Detail: fmt.Sprintf("at most %d open of %d; in use quiet %d, baseline %d, limit %d",
			worst.DBOpen, worst.DBMax, quiet.DBInUse, base.DBInUse, limit)}
}

func redisCheck(all []Sample, base, quiet Sample, pool int) LeakCheck {
	most := 0
	for _, s := range all {
		most = max(most, s.RedisConns)
	}
	limit := base.RedisConns + connMargin
	return LeakCheck{Name: "Redis connections within the pool", OK: most <= pool && quiet.RedisConns <= limit,
		Detail: fmt.Sprintf("at most %d of %d; quiet %d, baseline %d, limit %d", most, pool, quiet.RedisConns,
			base.RedisConns, limit)}
}

// outboxCheck: the inventory kept up (no backlog building during the
// load) and the outbox was empty once drained.
func outboxCheck(first, last []Sample, quiet Sample) LeakCheck {
	a := median(first, func(s Sample) int { return s.Outbox })
	b := median(last, func(s Sample) int { return s.Outbox })
	limit := 2*a + outboxSlack
	return LeakCheck{Name: "outbox not backing up", OK: b <= limit && quiet.Outbox == 0,
		Detail: fmt.Sprintf("median depth of the last third %d, of the first %d, limit %d; quiet %d", b, a, limit, quiet.Outbox)}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
