package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"paygateway/gateway"
	"paygateway/gateway/compensate"
	"paygateway/gateway/inventory"
	"paygateway/ledger"
	"paygateway/retry"
)

// wireOutbox adds the dead-letter routes, the outbox workers (when an
// inventory service is configured) and the lost-callback compensation
// (when the WeChat Pay client is configured).
func (m *Main) wireOutbox(ctx context.Context) error {
	m.Deps.Routes = append(m.Deps.Routes, gateway.OutboxRoutes)
	if m.Config.Inventory.BaseURL == "" || m.Config.Outbox.Workers == 0 {
		slog.Warn("outbox delivery disabled: inventory.base_url or outbox.workers not set; jobs wait in the outbox")
	} else {
		pool := newOutboxPool(m.Config, m.Store, "", func(o retry.Outcome) { m.Metrics.OutboxAttempt(string(o)) })
		m.AddJob(pool.Run)
	}
	wx := m.Wechat
	if wx == nil {
		slog.Warn("lost-callback compensation disabled: wechatpay merchant key not configured")
		return nil
	}
	c := m.Config.Compensation
	job := compensate.New(compensate.Config{Interval: c.Interval, SafetyBuffer: c.SafetyBuffer, MaxInterval: c.MaxInterval, Batch: c.Batch,
		MchID: m.Config.WechatPay.MchID, AppID: m.Config.WechatPay.AppID, Observe: m.Metrics.CompensationCheck}, m.Store, wx)
	m.AddJob(job.Run)
	return nil
}

// newOutboxPool wires the workers that deliver outbox jobs to inventory.
// stored (may be nil) is told each stored attempt's outcome.
func newOutboxPool(cfg Config, store *ledger.Store, name string, stored func(retry.Outcome)) *retry.Pool {
	o := cfg.Outbox
	jobs := &inventory.Jobs{Client: inventory.New(inventory.Config{BaseURL: cfg.Inventory.BaseURL, Timeout: cfg.Inventory.Timeout}),
		Orders: store}
	handler := retry.Mux{
		ledger.JobConfirmInventory: retry.HandlerFunc(jobs.Confirm),
		ledger.JobReleaseInventory: retry.HandlerFunc(jobs.Release),
	}
	// An attempt may query and then send, each call bounded by the timeout.
	attempt := 2 * cfg.Inventory.Timeout
	return retry.NewPool(retry.PoolConfig{Name: name, Workers: o.Workers, Batch: o.Batch, Poll: o.PollInterval,
		Lease: o.Lease, AttemptTimeout: attempt, Stored: stored, Policy: retry.Policy{Initial: o.InitialInterval, Max: o.MaxInterval, MaxElapsed: o.MaxElapsed,
			Multiplier: o.Multiplier, Jitter: o.Jitter}}, store.Outbox(), handler).WithClock(store.Now)
}

// outboxCommand runs `gateway outbox replay ID [--config FILE]`.
func outboxCommand(ctx context.Context, args []string) error {
	if len(args) < 2 || args[0] != "replay" {
		return errors.New("usage: gateway outbox replay ID [--config FILE]")
	}
	id, err := strconv.ParseUint(args[1], 10, 63)
	if err != nil || id == 0 {
		return fmt.Errorf("outbox replay: job id %q must be a positive integer", args[1])
	}
	cfg, _, err := loadFromFlags("outbox replay", args[2:], true)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	job, err := replayOutboxJob(ctx, cfg, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "job %d (%s %s) is %s, attempts so far %d\n", job.ID, job.Kind, job.Key, job.State, job.Attempts)
	return nil
}

// replayOutboxJob moves a dead job back to the queue.
func replayOutboxJob(ctx context.Context, cfg Config, id uint64) (*ledger.OutboxJob, error) {
	m := &Main{Config: cfg, NoMigrate: true}
	defer m.Close()
	if err := m.openStore(ctx); err != nil {
		return nil, err
	}
	var job *ledger.OutboxJob
	err := audited(ctx, m.Store, "outbox replay", fmt.Sprintf("job=%d", id), func() (err error) {
		job, err = m.Store.Outbox().Replay(ctx, id, "cli:"+currentUser())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox replay: %w", err)
	}
	return job, nil
}
