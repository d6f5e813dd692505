package retry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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
	// AttemptTimeout bounds one handler call. A claimed job starts only
	// while at least this much of its lease, plus StoreReserve, is left;
	// otherwise it is given back, so an attempt never runs past its lease
	// into another worker's claim. Default (and when not below Lease):
	// half the lease. Lease must exceed it by StoreReserve and the time a
	// claim takes, or every claimed job is given back.
	AttemptTimeout time.Duration
	Policy         Policy
	// Stored, when set, is told the outcome of each attempt stored
	// (metrics).
	Stored func(Outcome)
}

// storeTimeout bounds each queue call (claim, release, storing an
// attempt): with a hung database a worker gives up and tries again
// instead of holding a connection until the driver's read timeout.
const storeTimeout = 5 * time.Second

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
	if cfg.AttemptTimeout <= 0 || cfg.AttemptTimeout >= cfg.Lease {
		cfg.AttemptTimeout = cfg.Lease / 2
	}
	cfg.Policy = cfg.Policy.withDefaults()
	return &Pool{cfg: cfg, queue: q, handler: h, now: func() time.Time { return time.Now().UTC() }, log: slog.Default()}
}

// WithClock returns the pool reading time from now: the database's clock
// in the gateway, so that leases mean the same on every instance.
func (p *Pool) WithClock(now func() time.Time) *Pool {
	c := *p
	c.now = now
	return &c
}

// maxHostLen keeps worker ids (host-pid-random-wN) within the 64
// characters the ledger stores; the end of a host name (a pod's unique
// suffix) is kept.
const maxHostLen = 32

func defaultName() string {
	host, _ := os.Hostname()
	return nameFor(host)
}

func nameFor(host string) string {
	if len(host) > maxHostLen {
		host = host[len(host)-maxHostLen:]
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// workerID names worker i of the pool called name.
func workerID(name string, i int) string { return fmt.Sprintf("%s-w%d", name, i) }

// Run runs the workers until ctx ends. An attempt under way when ctx ends
// still finishes (bounded by its lease) and is stored; claimed jobs not
// yet started are released when the queue is a Releaser.
func (p *Pool) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < p.cfg.Workers; i++ {
		wg.Add(1)
		worker := workerID(p.cfg.Name, i)
		go func() { defer wg.Done(); p.work(ctx, worker) }()
	}
	wg.Wait()
}

func (p *Pool) work(ctx context.Context, worker string) {
	for ctx.Err() == nil {
		n, err := p.runOnceRecovered(ctx, worker)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("retry: claim failed", "worker", worker, "err", err)
		}
		if n == 0 || err != nil { // nothing due, or nothing could start: a slow claim must not spin
			sleep(ctx, p.cfg.Poll)
		}
	}
}

// runOnceRecovered is RunOnce with a panic outside the handler (in a
// claim or in storing an outcome) logged and made an error: the worker
// goes on instead of ending the process. Jobs it held are claimed again
// once their lease ends, and queried before they are sent again.
func (p *Pool) runOnceRecovered(ctx context.Context, worker string) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("retry: worker panicked", "worker", worker, "panic", v, "stack", string(debug.Stack()))
			n, err = 0, fmt.Errorf("worker panicked: %v", v)
		}
	}()
	return p.RunOnce(ctx, worker)
}

// RunOnce claims one batch as worker and handles it; it returns how many
// jobs it attempted (claimed jobs whose lease is too short for an attempt
// are given back, not counted).
func (p *Pool) RunOnce(ctx context.Context, worker string) (int, error) {
	// Shutdown does not cut a claim short: one whose commit landed as its
	// context ended would leave its jobs leased to a leaving worker for the
	// whole lease. A claim that returns after shutdown began is given back
	// below.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	jobs, err := p.queue.Claim(cctx, worker, p.cfg.Batch, p.cfg.Lease)
	cancel()
	if err != nil {
		return 0, err
	}
	attempted := 0
	for i, job := range jobs {
		// The batch shares one lease: jobs late in a slow batch are given
		// back to be claimed afresh rather than started short of time.
		if ctx.Err() != nil || !p.timeLeft(job) {
			p.release(ctx, worker, jobs[i:])
			break
		}
		attempted++
		if gaveBack := p.runJobReleasingRest(ctx, worker, job, jobs[i+1:]); gaveBack {
			break
		}
	}
	return attempted, nil
}

// runJobReleasingRest runs job; if shutdown begins meanwhile, the batch's
// jobs not yet started (rest) are given back at once, not after the
// attempt (which may outlast the shutdown's bound and leave them leased
// for nobody). It reports whether it gave them back.
func (p *Pool) runJobReleasingRest(ctx context.Context, worker string, job Job, rest []Job) bool {
	finished := make(chan struct{})
	gaveBack := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			p.release(ctx, worker, rest)
			gaveBack <- true
		case <-finished:
			gaveBack <- false
		}
	}()
	p.runJob(ctx, worker, job)
	close(finished)
	return <-gaveBack
}

// StoreReserve is the part of a job's lease kept, after a whole attempt,
// for storing its outcome: an outcome stored after the lease ran out is
// lost to the next claim (its backoff with it). A lease must be at least
// AttemptTimeout plus this, plus the time a claim takes.
const StoreReserve = time.Second

// timeLeft reports whether a whole attempt, and the storing of its
// outcome, fit in what is left of the job's lease.
func (p *Pool) timeLeft(job Job) bool {
	return job.LeaseUntil.IsZero() || job.LeaseUntil.Sub(p.now()) >= p.cfg.AttemptTimeout+StoreReserve
}

// release gives back claims that were never attempted.
func (p *Pool) release(ctx context.Context, worker string, jobs []Job) {
	r, ok := p.queue.(Releaser)
	if !ok {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	for _, job := range jobs {
		if err := r.Release(rctx, job, worker); err != nil {
			p.log.Warn("retry: release claim", "job_id", job.ID, "err", err)
		}
	}
}

// runJob makes one attempt, bounded by AttemptTimeout (so within the
// job's lease), and stores it.
func (p *Pool) runJob(ctx context.Context, worker string, job Job) {
	started := p.now()
	// Not cancelled by shutdown: a half-made call would leave the outcome
	// unknown, so the attempt finishes within its lease and is stored.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.AttemptTimeout)
	err := p.handle(hctx, job)
	cancel()
	a := Attempt{JobID: job.ID, Number: job.Attempt, Worker: worker, StartedAt: started, FinishedAt: p.now()}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	serr := p.settle(sctx, job, &a, err)
	scancel()
	if serr == nil && p.cfg.Stored != nil {
		p.cfg.Stored(a.Outcome)
	}
	log := p.log.With("out_trade_no", job.OutTradeNo, "job_id", job.ID, "kind", job.Kind, "attempt", job.Attempt)
	switch {
	case errors.Is(serr, ErrLeaseLost):
		log.Warn("retry: lease lost; another worker owns the job")
	case serr != nil:
		log.Error("retry: store attempt failed", "err", serr)
	case a.Outcome == OutcomeSkipped:
		log.Info("retry: job finished without acting", "reason", err)
	case a.Outcome == OutcomeDead: // a person must act: replay it once the cause is fixed
		log.Error("retry: job dead-lettered", "err", err, "permanent", IsPermanent(err))
	case err != nil:
		log.Warn("retry: attempt failed", "err", err, "permanent", IsPermanent(err))
	}
}

// handle runs the handler, a panic becoming a permanent error: the job
// goes to the dead letters (with the panic as its error) for a person to
// look at, instead of ending the process, and then, claimed again after
// its lease, the next instance's.
func (p *Pool) handle(ctx context.Context, job Job) (err error) {
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("retry: handler panicked", "job_id", job.ID, "kind", job.Kind, "attempt", job.Attempt,
				"panic", v, "stack", string(debug.Stack()))
			err = Permanent(fmt.Errorf("handler panicked: %v", v))
		}
	}()
	return p.handler.Handle(ctx, job)
}

// settle stores the attempt: done, retry at the next backoff delay, or
// dead for a permanent error or past the max elapsed time.
func (p *Pool) settle(ctx context.Context, job Job, a *Attempt, err error) error {
	if err == nil {
		a.Outcome = OutcomeDone
		return p.queue.Complete(ctx, *a)
	}
	a.Err, a.Unsent = truncate(err.Error(), maxErrorLen), IsUnsent(err)
	if IsSkipped(err) {
		a.Outcome = OutcomeSkipped
		return p.queue.Complete(ctx, *a)
	}
	first := job.FirstAttemptAt
	if first.IsZero() {
		first = a.StartedAt
	}
	next := a.FinishedAt.Add(p.cfg.Policy.NextDelay(job.Attempt))
	if IsPermanent(err) || next.Sub(first) > p.cfg.Policy.MaxElapsed {
		a.Outcome = OutcomeDead
		return p.queue.Dead(ctx, *a)
	}
	a.Outcome, a.NextRunAt = OutcomeRetry, next
	return p.queue.Retry(ctx, *a)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// truncate makes s valid UTF-8 and cuts it to at most n bytes on a
// character boundary: a cut inside a character could not be stored in a
// utf8mb4 column, and the attempt's result would never be stored.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
