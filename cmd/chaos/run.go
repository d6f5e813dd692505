package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"paygateway/gateway"
)

// Report is the outcome of a chaos run.
type Report struct {
	Deliveries     int
	Attempts       int
	Accepted       int
	GaveUp         int
	Forged         int
	Elapsed        time.Duration
	Faults         []string
	FaultErrors    []error
	StormSent      int
	StormOK        int
	JobsTotal      int
	InventoryStats string
	Invariants     []Invariant
}

// Violations is the sum of every invariant's count.
func (r *Report) Violations() int {
	n := 0
	for _, inv := range r.Invariants {
		n += inv.Count
	}
	return n
}

// Run starts a private stack, drives o's notifications through the gateway
// while the fault schedule runs, lets the outbox drain and checks the
// invariants. An error means the run itself broke (a server would not
// start); violations are in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	w, err := startWorld(ctx, o)
	if err != nil {
		return nil, err
	}
	defer w.close()
	d, err := newDriver(w, o)
	if err != nil {
		return nil, err
	}
	plan := d.plan(strings.ToUpper(gateway.NewToken()[:4]))
	o.logf("chaos: %d deliveries on %d workers (work dir %s)", len(plan), o.Concurrency, w.dir)
	start := time.Now()
	faults := &faultLog{}
	fctx, stopFaults := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { runFaults(fctx, schedule(o, w, faults), &d.progress, len(plan), faults, o) })
	var st *storm
	wg.Go(func() {
		for float64(d.progress.Load()) < 0.3*float64(len(plan)) && fctx.Err() == nil {
			sleep(fctx, 50*time.Millisecond)
		}
		st = runStorm(fctx, w, d)
	})
	d.run(ctx, plan)
	stopFaults()
	wg.Wait()
	rep := &Report{Deliveries: len(plan), Attempts: d.attempts, Accepted: len(d.accepted), GaveUp: len(d.gaveUp),
		Forged: len(d.forgedOrders), Elapsed: time.Since(start), Faults: faults.lines, FaultErrors: faults.errs,
		StormSent: st.sent, StormOK: st.ok}
	if err := w.heal(ctx); err != nil {
		return rep, err
	}
	ev := &Evidence{Ctx: ctx, DB: w.sql, Sim: w.sim, Inv: w.inv, Accepted: d.accepted, ForgedOrders: d.forgedOrders,
		ForgedAccepted: d.forgedAccepted, StormKeys: st.keys, StormSkipped: st.skipped}
	drain(ctx, w, o, ev)
	rep.JobsTotal = ev.JobsTotal
	s := w.inv.Stats()
	rep.InventoryStats = fmt.Sprintf("posts %d, confirmations %d, duplicates %d, faults %d", s.Posts, s.Confirmations,
		s.Duplicates, s.Faults)
	rep.Invariants, err = Check(ev)
	return rep, err
}

// heal makes sure every server is up before the drain and the check: a
// fault whose restart failed is retried once.
func (w *world) heal(ctx context.Context) error {
	if err := w.sql.PingContext(ctx); err != nil {
		if err := w.db.Restart(ctx); err != nil {
			return fmt.Errorf("mariadb did not come back: %w", err)
		}
	}
	return nil
}

// drain waits until every outbox job is done (done_at set) or the drain
// timeout passes. With no jobs at all the outbox feature is not merged.
func drain(ctx context.Context, w *world, o Options, ev *Evidence) {
	deadline := time.Now().Add(o.DrainTimeout)
	for {
		var total, pending int
		err := w.sql.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM(done_at IS NULL), 0) FROM outbox_jobs").
			Scan(&total, &pending)
		if err != nil {
			ev.DrainErr = fmt.Errorf("read outbox_jobs: %w", err)
			return
		}
		ev.JobsTotal, ev.JobsPending = total, pending
		ev.InventoryUsed = w.inv.Stats().Posts > 0
		if total == 0 {
			ev.DrainSkipped = "skipped: feature not merged (no outbox jobs written)"
			return
		}
		if pending == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		sleep(ctx, 500*time.Millisecond)
	}
}
