package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// event is a fault fired once the run has done at fraction `at` of its
// deliveries, so a short run gets the same schedule as a long one.
type event struct {
	at   float64
	name string
	fire func(ctx context.Context) error
}

// faultLog records what the schedule did, for the report.
type faultLog struct {
	bg    sync.WaitGroup // faults still ending in the background (Redis coming back)
	mu    sync.Mutex
	lines []string
	errs  []error
}

// snapshot returns the lines and errors so far.
func (l *faultLog) snapshot() ([]string, []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...), append([]error(nil), l.errs...)
}

func (l *faultLog) add(line string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if err != nil {
		l.errs = append(l.errs, err)
	}
}

// schedule builds the fault events of o against w.
func schedule(o Options, w *world, log *faultLog) []event {
	var evs []event
	for i := range o.Kills {
		evs = append(evs, event{at: float64(i+1) / float64(o.Kills+1), name: "SIGKILL gateway + restart",
			fire: func(ctx context.Context) error { w.gw.Kill(); return w.gw.Start(ctx) }})
	}
	if o.RedisStop > 0 {
		evs = append(evs, event{at: 0.35, name: "stop Redis for " + o.RedisStop.String(),
			fire: func(ctx context.Context) error {
				w.redis.Stop()
				// Redis stays down while deliveries go on; it comes back in the background.
				log.bg.Go(func() {
					select {
					case <-time.After(o.RedisStop):
					case <-ctx.Done():
					}
					err := w.redis.Start(context.WithoutCancel(ctx))
					log.add("Redis started again", err)
				})
				return nil
			}})
	}
	for i := range o.MariaDBRestarts {
		evs = append(evs, event{at: 0.6 + 0.1*float64(i), name: "crash MariaDB (SIGKILL) + restart",
			fire: func(ctx context.Context) error { return w.db.Crash(ctx) }})
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	return evs
}

// runFaults fires the events as progress/total passes their marks.
func runFaults(ctx context.Context, evs []event, progress *atomic.Int64, total int, log *faultLog, o Options) {
	for i, ev := range evs {
		for float64(progress.Load())/float64(total) < ev.at {
			select {
			case <-ctx.Done():
				for _, missed := range evs[i:] { // a fault that never fired proves nothing: it fails the run
					log.add(missed.name+" at "+pct(missed.at)+": never fired", errors.New(missed.name+" never fired"))
				}
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		start := time.Now()
		err := ev.fire(ctx)
		line := ev.name + " at " + pct(ev.at) + " (" + time.Since(start).Round(time.Millisecond).String() + ")"
		if err != nil {
			line += ": " + err.Error()
		}
		o.logf("fault: %s", line)
		log.add(line, err)
	}
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }
