package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"paygateway/gateway"
)

// A soak drives steady, fault-free load through the gateway for
// Options.Soak and watches it (sampler) for anything growing without
// bound; the ledger invariants are then checked as after a chaos run.

// SoakReport is the outcome of a soak.
type SoakReport struct {
	*Report                // deliveries, refunds and the invariants, as a chaos run's
	Rate           float64 // offered deliveries a second
	Duration       time.Duration
	Dropped        int            // arrivals never sent: too many deliveries already in flight
	Refusals       map[string]int // genuine deliveries' answers other than 2xx, by status and reason
	Finance        *financeLog
	Samples        []Sample
	SampleErrors   []string
	Warmup         time.Duration
	Checks         []LeakCheck
	RefundedOrders int // orders the steady refunds reached
}

// Failures counts the failed leak checks, the samples that could not be
// taken, dropped arrivals, failed finance reads and the invariants'
// violations: each fails the soak.
func (r *SoakReport) Failures() int {
	n := r.Violations() + len(r.SampleErrors) + r.Dropped + r.Finance.failed()
	for _, c := range r.Checks {
		if !c.OK {
			n++
		}
	}
	return n
}

// soakRedisPool is the gateway's Redis pool size in a soak (set in its
// environment, so the check knows it).
const soakRedisPool = 20

// maxInFlight bounds the open loop's deliveries in flight: at 200/s and a
// few milliseconds each there are a handful; thousands mean the gateway
// fell behind, and each arrival past the bound is counted, not queued.
const maxInFlight = 2000

// quietWait is how long the gateway idles after the drain before the
// quiet sample: its keep-alive connections and their goroutines are then
// either gone or few, and the ledger gauges (read at most every 10 s)
// show the drained outbox.
const quietWait = 11 * time.Second

// sampleEvery is the sampling interval: 10 s, shorter for a short soak so
// it still has a dozen samples.
func sampleEvery(d time.Duration) time.Duration {
	return min(10*time.Second, max(2*time.Second, d/12))
}

// warmupOf is the time before the baseline: a minute, or a fifth of a
// short soak (connection pools, caches and the JIT-free but lazily sized
// runtime settle in it).
func warmupOf(d time.Duration) time.Duration { return min(time.Minute, d/5) }

// RunSoak starts a private stack with nothing failing, drives o.Rate
// deliveries a second, o.RefundRate refunded orders a second and finance
// reads through the gateway for o.Soak while sampling it, lets the outbox
// drain, takes a quiet sample and checks the invariants.
func RunSoak(ctx context.Context, o Options) (*SoakReport, error) {
	w, d, err := openRun(ctx, o)
	if err != nil {
		return nil, err
	}
	defer w.close()
	d.lat = &latencies{}
	o.logf("soak: %.0f deliveries/s for %s (work dir %s)", o.Rate, o.Soak, w.dir)
	rep := &SoakReport{Report: &Report{}, Rate: o.Rate, Duration: o.Soak, Warmup: warmupOf(o.Soak), Finance: newFinanceLog()}
	st := newStorm()
	start := time.Now()
	smp := newSampler(w, d.lat, start)
	lctx, stopLoad := context.WithTimeout(ctx, o.Soak)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Go(func() { smp.run(lctx, sampleEvery(o.Soak)) })
	wg.Go(func() { rep.RefundedOrders = steadyRefunds(lctx, ctx, w, d, st) })
	wg.Go(func() { financeReads(lctx, w, rep.Finance) })
	run := strings.ToUpper(gateway.NewToken()[:4])
	rep.Deliveries, rep.Dropped = d.pace(lctx, ctx, run)
	wg.Wait()
	rep.Attempts, rep.Accepted, rep.GaveUp = d.attempts, len(d.accepted), len(d.gaveUp)
	rep.Forged, rep.Elapsed, rep.Storm = len(d.forgedOrders), time.Since(start), st.summary()
	rep.Refusals = d.refusals
	if err := settle(ctx, w, o, d, st, rep.Report); err != nil {
		return rep, err
	}
	// The load's clients drop their idle connections: the gateway's
	// goroutines and fds serving them would otherwise hide in the quiet
	// sample how many of its own stayed (after an overload, hundreds).
	d.client.CloseIdleConnections()
	sleep(ctx, quietWait)
	smp.take(ctx, true)
	rep.Samples, rep.SampleErrors = smp.samples, smp.errs
	rep.Checks = Verdict(rep.Samples, rep.Warmup, soakRedisPool)
	return rep, nil
}

// pace sends deliveries open loop, the i-th at start + i/Rate, until
// lctx ends: new orders, redeliveries of recent ones (DuplicateRate) and
// forged ones (ForgedRate). Each delivery runs on under ctx, and pace
// returns once all have ended, with how many arrivals there were and how
// many found maxInFlight deliveries still running.
func (d *driver) pace(lctx, ctx context.Context, run string) (arrivals, dropped int) {
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	var recent []*order // a ring of the newest orders, which redeliveries pick from
	start := time.Now()
	for i := 0; lctx.Err() == nil; i++ {
		sleep(lctx, time.Until(start.Add(time.Duration(float64(i)*float64(time.Second)/d.o.Rate))))
		if lctx.Err() != nil {
			break
		}
		arrivals++
		select {
		case slots <- struct{}{}:
		default:
			dropped++
			continue
		}
		o, forged := d.arrival(run, i, &recent)
		wg.Go(func() {
			defer func() { <-slots }()
			if forged {
				d.forge(ctx, o)
			} else {
				d.deliver(ctx, o)
			}
		})
	}
	wg.Wait()
	return arrivals, dropped
}

// recentOrders is how many of the newest orders redeliveries pick from:
// about ten seconds' worth at the default rate, so some arrive while the
// first delivery is still in flight, as WeChat's retries after a slow
// answer do.
const recentOrders = 1500

// arrival is the i-th delivery's order: a forged one, a recent order
// again, or a new one (added to recent).
func (d *driver) arrival(run string, i int, recent *[]*order) (o *order, forged bool) {
	r := rand.Float64()
	switch {
	case r < d.o.ForgedRate:
		o = &order{no: fmt.Sprintf("F%s%08d", run, i), amount: 100 + rand.Int64N(9900)}
		d.mu.Lock()
		d.forgedOrders = append(d.forgedOrders, o.no)
		d.mu.Unlock()
		return o, true
	case r < d.o.ForgedRate+d.o.DuplicateRate && len(*recent) > 0:
		return (*recent)[rand.IntN(len(*recent))], false
	}
	o = &order{no: fmt.Sprintf("S%s%08d", run, i), amount: 100 + rand.Int64N(9900)}
	if len(*recent) < recentOrders {
		*recent = append(*recent, o)
	} else {
		(*recent)[i%recentOrders] = o
	}
	return o, false
}

// steadyRefunds refunds o.RefundRate paid orders a second until lctx
// ends, each as the storm does one (stormKeys keys, each sent
// StormRepeats times at once; the last key is more than the order has
// left), oldest paid first. The requests run on under ctx; it returns the
// number of orders once all have ended.
func steadyRefunds(lctx, ctx context.Context, w *world, d *driver, st *storm) int {
	var wg sync.WaitGroup
	start, n := time.Now(), 0
	for i := 0; lctx.Err() == nil; i++ {
		sleep(lctx, time.Until(start.Add(time.Duration(float64(i)*float64(time.Second)/d.o.RefundRate))))
		paid := d.paidSoFar(n + 1)
		if lctx.Err() != nil || len(paid) <= n {
			continue // nothing paid yet to refund
		}
		o := paid[n]
		n++
		token, err := w.id.UserToken(o.openid(), time.Hour)
		if err != nil {
			st.mu.Lock()
			st.err = err
			st.mu.Unlock()
			break
		}
		wg.Go(func() { st.order(ctx, w, d, o, token) })
	}
	wg.Wait()
	return n
}
