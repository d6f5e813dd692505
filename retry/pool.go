package retry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// maxErrorLen caps the error text stored with a job or an attempt.
const maxErrorLen = 500

// PoolConfig sizes a worker pool.
type PoolConfig struct {
	Name    string        // prefix of worker ids; default host-pid-random
	Workers int           // concurrent workers; default 1
	Batch   int           // jobs claimed per round trip; default 1
	Poll    time.Duration // wait when nothing is due; default 1 s
	Lease   time.Duration // how long a claim lasts; default 30 s
	Policy  Policy
}

// Pool runs jobs from a Queue with a Handler.
type Pool struct {
	cfg     PoolConfig
	queue   Queue
	handler Handler
	now     func() time.Time
	log     *slog.Logger
}

// NewPool returns a pool; zero config fields get defaults.
func NewPool(cfg PoolConfig, q Queue, h Handler) *Pool {
	if cfg.Name == "" {
		cfg.Name = defaultName()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	cfg.Policy = cfg.Policy.withDefaults()
	return &Pool{cfg: cfg, queue: q, handler: h, now: func() time.Time { return time.Now().UTC() }, log: slog.Default()}
}

// WithClock returns the pool reading time from now (for tests).
func (p *Pool) WithClock(now func() time.Time) *Pool {
	c := *p
	c.now = now
	return &c
}

func defaultName() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Run runs the workers until ctx ends. An attempt under way when ctx ends
// still finishes (bounded by its lease) and is stored; claimed jobs not
// yet started are released when the queue is a Releaser.
func (p *Pool) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < p.cfg.Workers; i++ {
		wg.Add(1)
		worker := fmt.Sprintf("%s-w%d", p.cfg.Name, i)
		go func() { defer wg.Done(); p.work(ctx, worker) }()
	}
	wg.Wait()
}

func (p *Pool) work(ctx context.Context, worker string) {
	for ctx.Err() == nil {
		n, err := p.RunOnce(ctx, worker)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("retry: claim failed", "worker", worker, "err", err)
		}
		if n == 0 || err != nil {
			sleep(ctx, p.cfg.Poll)
		}
	}
}

// RunOnce claims one batch as worker and handles it; it returns how many
// jobs it claimed.
func (p *Pool) RunOnce(ctx context.Context, worker string) (int, error) {
	jobs, err := p.queue.Claim(ctx, worker, p.cfg.Batch, p.cfg.Lease)
	if err != nil {
		return 0, err
	}
	for i, job := range jobs {
		if ctx.Err() != nil {
			p.release(ctx, worker, jobs[i:])
			break
		}
		p.runJob(ctx, worker, job)
	}
	return len(jobs), nil
}

// release gives back claims that were never attempted.
func (p *Pool) release(ctx context.Context, worker string, jobs []Job) {
	r, ok := p.queue.(Releaser)
	if !ok {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, job := range jobs {
		if err := r.Release(rctx, job, worker); err != nil {
			p.log.Warn("retry: release claim", "job_id", job.ID, "err", err)
		}
	}
}

// runJob makes one attempt, bounded by the job's lease, and stores it.
func (p *Pool) runJob(ctx context.Context, worker string, job Job) {
	started := p.now()
	if !job.LeaseUntil.IsZero() && !started.Before(job.LeaseUntil) {
		return // lease gone while earlier jobs of the batch ran; it will be claimed again
	}
	// Not cancelled by shutdown: a half-made call would leave the outcome
	// unknown, so the attempt finishes within its lease and is stored.
	hctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), job.LeaseUntil)
	err := p.handler.Handle(hctx, job)
	cancel()
	a := Attempt{JobID: job.ID, Number: job.Attempt, Worker: worker, StartedAt: started, FinishedAt: p.now()}
	serr := p.settle(context.WithoutCancel(ctx), job, a, err)
	log := p.log.With("out_trade_no", job.OutTradeNo, "job_id", job.ID, "kind", job.Kind, "attempt", job.Attempt)
	switch {
	case errors.Is(serr, ErrLeaseLost):
		log.Warn("retry: lease lost; another worker owns the job")
	case serr != nil:
		log.Error("retry: store attempt failed", "err", serr)
	case err != nil:
		log.Warn("retry: attempt failed", "err", err, "permanent", IsPermanent(err))
	}
}

// settle stores the attempt: done, retry at the next backoff delay, or
// dead for a permanent error or past the max elapsed time.
func (p *Pool) settle(ctx context.Context, job Job, a Attempt, err error) error {
	if err == nil {
		a.Outcome = OutcomeDone
		return p.queue.Complete(ctx, a)
	}
	a.Err = truncate(err.Error(), maxErrorLen)
	first := job.FirstAttemptAt
	if first.IsZero() {
		first = a.StartedAt
	}
	next := a.FinishedAt.Add(p.cfg.Policy.NextDelay(job.Attempt))
	if IsPermanent(err) || next.Sub(first) > p.cfg.Policy.MaxElapsed {
		a.Outcome = OutcomeDead
		return p.queue.Dead(ctx, a)
	}
	a.Outcome, a.NextRunAt = OutcomeRetry, next
	return p.queue.Retry(ctx, a)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
