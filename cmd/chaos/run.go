package main

import (
	"context"
	"database/sql"
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
	Storm          string
	JobsTotal      int
	JobsStates     string
	RefundStates   string
	RefundMoves    string // the ledger's refund transitions (state_history), e.g. "ABNORMAL→SUCCESS 3"
	InventoryStats string
	WechatFaults   map[string]int // faults WeChat Pay's refund API injected, by kind
	WechatRefused  map[string]int // refund applications WeChat Pay's own rules refused, by reason
	DeferredChecks int            // checks after a 2xx run only once the database was back
	Invariants     []Invariant
}

// Violations is the sum of every invariant's count, the genuine
// notifications given up (never accepted within the delivery deadline)
// and the faults that failed or never fired.
func (r *Report) Violations() int {
	n := r.GaveUp + len(r.FaultErrors)
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
	w, d, err := openRun(ctx, o)
	if err != nil {
		return nil, err
	}
	defer w.close()
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
		st = runStorm(ctx, w, d) // not fctx: the storm finishes even if the deliveries are done
	})
	d.run(ctx, plan)
	stopFaults()
	wg.Wait()
	faults.bg.Wait() // a Redis stopped late comes back now (fctx ended), and its restart is in the log
	rep := &Report{Deliveries: len(plan), Attempts: d.attempts, Accepted: len(d.accepted), GaveUp: len(d.gaveUp),
		Forged: len(d.forgedOrders), Elapsed: time.Since(start), Storm: st.summary()}
	rep.Faults, rep.FaultErrors = faults.snapshot()
	if err := w.heal(ctx); err != nil {
		return rep, err
	}
	return rep, settle(ctx, w, o, d, st, rep)
}

// settle is what follows the load, in a chaos run and a soak alike: the
// commit checks deferred past an outage, the drain, and the invariant
// checker, whose figures it adds to rep.
func settle(ctx context.Context, w *world, o Options, d *driver, st *storm, rep *Report) error {
	var err error
	if rep.DeferredChecks, err = d.recheckDeferred(ctx); err != nil {
		return err
	}
	ev := &Evidence{Ctx: ctx, DB: w.sql, Sim: w.sim, Inv: w.inv, Accepted: d.accepted, ForgedOrders: d.forgedOrders,
		ForgedAccepted: d.forgedAccepted, ForgedRefused: d.forgedRefused, ForgedWrongReason: d.forgedWrongReason, Storm: st, Uncommitted: d.uncommitted,
		QueryLagOptional: !o.QueryLagEvidence, RefundAcks: w.acks, FaultFree: o.Soak > 0}
	drain(ctx, w, o, ev)
	ev.RefundsRefused = w.sim.RefundsRefused() // the janitor's re-sends during the drain count too
	rep.JobsTotal, rep.JobsStates = ev.JobsTotal, ev.JobsStates
	rep.RefundStates = countBy(ctx, w, "SELECT state, COUNT(*) FROM refunds GROUP BY state ORDER BY state")
	rep.RefundMoves = countBy(ctx, w, `SELECT CONCAT(from_state, '→', to_state), COUNT(*) FROM state_history
		WHERE entity = 'refund' GROUP BY 1 ORDER BY 1`)
	s := w.inv.Stats()
	rep.InventoryStats = fmt.Sprintf("posts %d, confirmations %d, duplicates %d, faults %d", s.Posts, s.Confirmations,
		s.Duplicates, s.Faults)
	rep.WechatFaults, rep.WechatRefused = w.sim.FaultsInjected(), ev.RefundsRefused
	rep.Invariants, err = Check(ev)
	_, deferred := w.acks.counts()
	rep.DeferredChecks += deferred // refund notifications' 2xx the ledger could not be asked about as they came
	return err
}

// heal makes sure every server is up before the drain and the check: a
// fault whose restart failed (it is in the report's fault errors) is
// retried once.
func (w *world) heal(ctx context.Context) error {
	if err := w.sql.PingContext(ctx); err != nil {
		if err := w.db.Restart(ctx); err != nil {
			return fmt.Errorf("mariadb did not come back: %w", err)
		}
	}
	if err := w.redis.Ping(); err != nil {
		if err := w.redis.Start(ctx); err != nil {
			return fmt.Errorf("redis did not come back: %w", err)
		}
	}
	return nil
}

// pendingWork counts the refunds not yet in a final state (ABNORMAL is
// not: the simulator resolves each during the run) and the outbox jobs
// (all, and those not DONE). The refunds are read first: a refund that
// succeeds between the two reads has its release job in the same commit,
// so the jobs' count sees it.
func pendingWork(ctx context.Context, db *sql.DB, ev *Evidence) error {
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM refunds
		WHERE state IN ('CREATED', 'PROCESSING', 'UNKNOWN', 'ABNORMAL')`).Scan(&ev.RefundsPending)
	if err == nil {
		err = db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(state <> 'DONE'), 0) FROM outbox_jobs`).
			Scan(&ev.JobsTotal, &ev.JobsPending)
	}
	if err != nil {
		return fmt.Errorf("read the ledger: %w", err)
	}
	return nil
}

// drain waits until every outbox job is DONE and every refund settled,
// or the drain timeout passes.
func drain(ctx context.Context, w *world, o Options, ev *Evidence) {
	deadline := time.Now().Add(o.DrainTimeout)
	for {
		if err := pendingWork(ctx, w.sql, ev); err != nil {
			ev.DrainErr = err
			return
		}
		if (ev.JobsPending == 0 && ev.RefundsPending == 0) || time.Now().After(deadline) || ctx.Err() != nil {
			ev.JobsStates = countBy(ctx, w, "SELECT CONCAT(kind, ' ', state), COUNT(*) FROM outbox_jobs GROUP BY kind, state ORDER BY 1")
			o.logf("chaos: drain ended: %d of %d jobs not done, %d refunds pending", ev.JobsPending, ev.JobsTotal, ev.RefundsPending)
			return
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// countBy renders a "label, count" query as "label n, label n".
func countBy(ctx context.Context, w *world, q string) string {
	rows, err := w.sql.QueryContext(ctx, q)
	if err != nil {
		return "error: " + err.Error()
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var label string
		var n int
		if err := rows.Scan(&label, &n); err != nil {
			return "error: " + err.Error()
		}
		parts = append(parts, fmt.Sprintf("%s %d", label, n))
	}
	return strings.Join(parts, ", ")
}

// openRun checks o, starts the private world and its driver; the caller
// closes the world.
func openRun(ctx context.Context, o Options) (*world, *driver, error) {
	if err := o.Validate(); err != nil {
		return nil, nil, err
	}
	w, err := startWorld(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	d, err := newDriver(w, o)
	if err != nil {
		w.close()
		return nil, nil, err
	}
	return w, d, nil
}
