package gateway

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"paygateway/ledger"
	"paygateway/retry"
)

// DailyConfig configures DailyReconcile.
type DailyConfig struct {
	// At is the offset after midnight UTC+8 from which the previous day's
	// bill is fetched (WeChat Pay publishes it in the morning).
	At time.Duration
	// Retry is the wait after a day's first failure; it doubles with each
	// further failure, up to 8 times Retry. Default 15m.
	Retry time.Duration
	// LookBack is how many days, up to the last one due, are kept
	// reconciled; default 30. WeChat Pay keeps bills for 3 months.
	LookBack int
	// Now is the clock; default the store's (the database's).
	Now func() time.Time
}

// Defaults of DailyConfig.
const (
	DefaultReconcileRetry    = 15 * time.Minute
	DefaultReconcileLookBack = 30
)

func (c DailyConfig) withDefaults(s *ledger.Store) DailyConfig {
	if c.Retry <= 0 {
		c.Retry = DefaultReconcileRetry
	}
	if c.LookBack <= 0 {
		c.LookBack = DefaultReconcileLookBack
	}
	if c.Now == nil {
		c.Now = s.Now
	}
	return c
}

// window returns the first and last day to keep reconciled at now: the
// last is yesterday once At has passed today, else the day before. The
// first is never older than WeChat Pay's bills go (billsKeptFrom): a day
// whose bill it no longer serves would fail, and be retried, every day
// until it left the look back.
func (c DailyConfig) window(now time.Time) (first, last string) {
	last = ledger.DayOf(now.Add(-c.At - 24*time.Hour))
	start, _ := ledger.DayStart(last) // last comes from DayOf: always valid
	first = ledger.DayOf(start.Add(-time.Duration(c.LookBack-1) * 24 * time.Hour))
	return max(first, billsKeptFrom(now)), last
}

// billsKeptFrom is the first day whose bill WeChat Pay still serves at now:
// it keeps three months of them (下载账单: 仅支持三个月内的账单下载), read
// here as the day after the same date three months back, in UTC+8 (the
// date itself may or may not count: left out to be safe), that date cut to
// the month's last day (31 May: 28 February, not AddDate's 3 March, which
// would drop days still served and bring them back on 1 June). 90 days
// back reaches 31 January on 1 May.
func billsKeptFrom(now time.Time) string {
	y, m, d := now.In(ledger.BusinessDay).Date()
	first := time.Date(y, m-3, 1, 0, 0, 0, 0, ledger.BusinessDay)
	lastDay := first.AddDate(0, 1, -1).Day()
	return ledger.DayOf(first.AddDate(0, 0, min(d, lastDay))) // the day after that date
}

// dueWindow is the window at now, starting no earlier than the day of
// TakeOver when it is set, else than the day of the ledger's first
// payment: the payments of days before the gateway took any were recorded
// by whatever took them, and "repairing" them here would record (and
// fulfil) them twice. Without TakeOver and payments it is empty. With
// TakeOver, the days from it are due even while the ledger has nothing
// (every callback of those days refused, say): each bill payment is
// checked against TakeOver itself.
func (r *Reconciler) dueWindow(ctx context.Context, cfg DailyConfig, now time.Time) (first, last string, err error) {
	first, last = cfg.window(now)
	if !r.TakeOver.IsZero() {
		return max(first, ledger.DayOf(r.TakeOver)), last, nil
	}
	start, err := r.Store.FirstPaymentDay(ctx)
	if err != nil {
		return "", "", err
	}
	if start == "" {
		start = ledger.DayOf(now) // after last: no day is due
	}
	return max(first, start), last, nil
}

// recheckFrom is the first of the last ledger.NoBillRecheckDays days up to
// last: a NO_BILL report of those is run again (the bill may be late).
func recheckFrom(last string) string {
	start, _ := ledger.DayStart(last) // last comes from DayOf: always valid
	return ledger.DayOf(start.Add(-time.Duration(ledger.NoBillRecheckDays-1) * 24 * time.Hour))
}

// dayRetry is a failed day's backoff.
type dayRetry struct {
	failures int
	next     time.Time
}

// DailyReconcile keeps the last LookBack days (none before TakeOver's day
// when it is set, else none before the ledger's first payment) reconciled
// until ctx ends. On start, daily at At and
// whenever a failed day's backoff ends, it runs each day of the window
// without a stored report, oldest first. The days still to do come from
// the reconciliations table, so neither a restart, nor a start after At,
// nor a failure that outlasts a day skips one; only the backoff is kept in
// memory. Several instances may run it: a day's lease lets one of them run
// it, the others retry later and find it done.
func (r *Reconciler) DailyReconcile(ctx context.Context, cfg DailyConfig) {
	cfg = cfg.withDefaults(r.Store)
	retries := map[string]dayRetry{}
	for {
		wake := r.catchUp(ctx, cfg, retries)
		// Look again at least hourly: cheap, and robust to clock changes.
		if !sleepCtx(ctx, min(wake.Sub(cfg.Now()), time.Hour)) {
			return
		}
	}
}

// catchUp runs the due days of the window that have no report and returns
// when to look again.
func (r *Reconciler) catchUp(ctx context.Context, cfg DailyConfig, retries map[string]dayRetry) time.Time {
	now := cfg.Now()
	wake := nextRun(now, cfg.At)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the two reads below; each day's run has its own bound
	defer cancel()
	first, last, err := r.dueWindow(rctx, cfg, now)
	if err != nil {
		slog.ErrorContext(ctx, "daily reconciliation: cannot read the ledger", "err", err)
		return now.Add(cfg.Retry)
	}
	done, err := r.Store.ReconciledDays(rctx, first, last, recheckFrom(last))
	if err != nil {
		slog.ErrorContext(ctx, "daily reconciliation: cannot read the reconciled days", "err", err)
		return now.Add(cfg.Retry)
	}
	for day := range retries {
		if day < first || done[day] {
			delete(retries, day)
		}
	}
	for _, day := range daysBetween(first, last) {
		if done[day] || ctx.Err() != nil {
			continue
		}
		if rt, ok := retries[day]; ok && now.Before(rt.next) {
			wake = earlier(wake, rt.next)
			continue
		}
		if r.doneMeanwhile(ctx, day, recheckFrom(last)) {
			delete(retries, day)
			continue
		}
		if rt, failed := r.runDay(ctx, cfg, day, retries[day]); failed {
			retries[day] = rt
			wake = earlier(wake, rt.next)
		} else {
			delete(retries, day)
		}
	}
	return wake
}

// doneMeanwhile reads again whether day has a report: a catch-up of many
// days takes long, and another instance may have finished this one since
// the window was read (running it again would download its bill and
// replace its report for nothing). A read that fails says no.
func (r *Reconciler) doneMeanwhile(ctx context.Context, day, recheckFrom string) bool {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	done, err := r.Store.ReconciledDays(rctx, day, day, recheckFrom)
	return err == nil && done[day]
}

// noBillRecheck is how often a recent NO_BILL day is run again;
// tooLargeRecheck a day whose bill is too large (in case the limit was
// raised meanwhile).
const (
	noBillRecheck   = time.Hour
	tooLargeRecheck = 24 * time.Hour
)

// runDay runs one day and, when it fails or WeChat Pay had no bill of it
// yet (NO_BILL), returns when to run it again.
func (r *Reconciler) runDay(ctx context.Context, cfg DailyConfig, day string, rt dayRetry) (dayRetry, bool) {
	rep, err := r.Run(ctx, day, "daily-job")
	if err == nil && rep.Status == ledger.ReconcileNoBill {
		rt.next = cfg.Now().Add(noBillRecheck)
		slog.InfoContext(ctx, "daily reconciliation: no bill of the day yet", "date", day, "next", rt.next)
		return rt, true
	}
	if err == nil || ctx.Err() != nil {
		return rt, false
	}
	rt.failures++
	policy := retry.Policy{Initial: cfg.Retry, Max: 8 * cfg.Retry, Multiplier: 2, Jitter: 0.1}
	rt.next = cfg.Now().Add(policy.NextDelay(rt.failures))
	if errors.Is(err, ErrBillTooLarge) { // downloading it every few hours cannot help
		rt.next = cfg.Now().Add(tooLargeRecheck)
	}
	if errors.Is(err, ledger.ErrBillUnreadable) { // nor reading it again: its report says UNREADABLE
		rt.next = cfg.Now().Add(ledger.UnreadableRecheck)
	}
	level := slog.LevelError
	if ErrorCode(err) == CodeInFlight {
		level = slog.LevelInfo // another instance runs it
	}
	slog.Log(ctx, level, "daily reconciliation failed; will retry", "date", day, "failures", rt.failures,
		"next", rt.next, "err", err)
	return rt, true
}

// daysBetween lists the business days from first to last, inclusive.
func daysBetween(first, last string) []string {
	start, err1 := ledger.DayStart(first)
	end, err2 := ledger.DayStart(last)
	if err1 != nil || err2 != nil {
		return nil
	}
	var out []string
	for t := start; !t.After(end); t = t.Add(24 * time.Hour) { // UTC+8 has no DST
		out = append(out, ledger.DayOf(t))
	}
	return out
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// nextRun returns the first instant after t that is at past midnight UTC+8.
func nextRun(t time.Time, at time.Duration) time.Time {
	local := t.In(ledger.BusinessDay)
	run := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, ledger.BusinessDay).Add(at)
	if !run.After(t) {
		run = run.AddDate(0, 0, 1)
	}
	return run.UTC()
}

// sleepCtx waits d unless ctx ends first; it reports whether it waited.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
