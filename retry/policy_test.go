package retry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
)

func TestNextDelayGrowsWithinJitterAndCap(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second, MaxElapsed: time.Hour, Multiplier: 2, Jitter: 0.1}
	tests := []struct {
		attempt int
		base    time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond}, {5, time.Second}, {40, time.Second}}
	for _, tc := range tests {
		for i := 0; i < 50; i++ {
			d := p.NextDelay(tc.attempt)
			lo, hi := time.Duration(float64(tc.base)*0.9), time.Duration(float64(tc.base)*1.1)
			if d < lo || d > hi {
				t.Fatalf("NextDelay(%d) = %v, want within [%v, %v]", tc.attempt, d, lo, hi)
			}
		}
	}
}

// TestNextDelayNeverPassesMax: jitter on a capped delay stays within Max
// (backoff adds it after its cap), and a cap too large for jitter to fit
// in a Duration gives Max, not a negative delay that makes the job due at
// once, for ever.
func TestNextDelayNeverPassesMax(t *testing.T) {
	for _, p := range []Policy{
		{Initial: time.Minute, Max: 5 * time.Minute, MaxElapsed: 24 * time.Hour, Multiplier: 2, Jitter: 0.5},
		{Initial: time.Second, Max: 250 * 365 * 24 * time.Hour, MaxElapsed: 290 * 365 * 24 * time.Hour, Multiplier: 2, Jitter: 0.5},
	} {
		seen := map[time.Duration]bool{}
		for i := 0; i < 500; i++ {
			d := p.NextDelay(64)
			if lo := time.Duration(float64(p.Max) * (1 - p.Jitter)); d < lo || d > p.Max {
				t.Fatalf("NextDelay(64) = %v with Max %v, want within [%v, Max]", d, p.Max, lo)
			}
			seen[d] = true
		}
		if len(seen) < 400 { // at the cap, delays stay spread out
			t.Errorf("%d distinct delays of 500 at the cap", len(seen))
		}
	}
}

// TestNextDelayWithNaNFactorsUsesDefaults: a NaN jitter or multiplier
// (strconv.ParseFloat takes "NaN", and NaN passes every < and >= check)
// gets backoff's default like any other value out of range. A NaN jitter
// made every delay negative: the job was due again at once, retried in a
// loop against the inventory.
func TestNextDelayWithNaNFactorsUsesDefaults(t *testing.T) {
	for _, p := range []Policy{
		{Initial: time.Second, Max: time.Minute, MaxElapsed: time.Hour, Multiplier: 2, Jitter: math.NaN()},
		{Initial: time.Second, Max: time.Minute, MaxElapsed: time.Hour, Multiplier: math.NaN(), Jitter: 0.5},
	} {
		for attempt := 1; attempt <= 3; attempt++ {
			d := p.NextDelay(attempt)
			mult := p.Multiplier // NaN: backoff's default; jitter NaN: its default 0.5
			if math.IsNaN(mult) {
				mult = backoff.DefaultMultiplier
			}
			base := float64(time.Second) * math.Pow(mult, float64(attempt-1))
			if lo, hi := time.Duration(base*0.5), time.Duration(base*1.5)+1; d < lo || d > hi {
				t.Fatalf("NextDelay(%d) = %v with multiplier %v, jitter %v; want within [%v, %v]",
					attempt, d, p.Multiplier, p.Jitter, lo, hi)
			}
		}
	}
}

// TestNextDelayKeepsGrowingPastAttempt64: with a gentle multiplier the
// delay still grows to its cap; stepping at most 64 times left it at
// 1.05^63 ≈ 22 initial intervals for good (22 s, not the 1 h max), and a
// job in an outage was retried 160 times an hour instead of once.
func TestNextDelayKeepsGrowingPastAttempt64(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Hour, MaxElapsed: 48 * time.Hour, Multiplier: 1.05, Jitter: 0.1}
	for _, tc := range []struct {
		attempt int
		base    time.Duration
	}{{100, time.Duration(float64(time.Second) * math.Pow(1.05, 99))}, {200, time.Hour}, {5000, time.Hour}} {
		d := p.NextDelay(tc.attempt)
		if lo, hi := time.Duration(float64(tc.base)*0.89), time.Duration(float64(tc.base)*1.1); d < lo || d > hi {
			t.Fatalf("NextDelay(%d) = %v, want within [%v, %v]", tc.attempt, d, lo, hi)
		}
	}
}

// memQueue is an in-memory Queue that records settled attempts.
type memQueue struct {
	jobs    []Job
	settled []Attempt
}

func (q *memQueue) Claim(context.Context, string, int, time.Duration) ([]Job, error) {
	out := q.jobs
	q.jobs = nil
	return out, nil
}
func (q *memQueue) Complete(_ context.Context, a Attempt) error {
	q.settled = append(q.settled, a)
	return nil
}
func (q *memQueue) Retry(_ context.Context, a Attempt) error {
	q.settled = append(q.settled, a)
	return nil
}
func (q *memQueue) Dead(_ context.Context, a Attempt) error {
	q.settled = append(q.settled, a)
	return nil
}

func TestPoolSettlesOutcomes(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	policy := Policy{Initial: time.Second, Max: time.Minute, MaxElapsed: time.Hour, Multiplier: 2, Jitter: 0.1}
	tests := []struct {
		name       string
		err        error
		firstAt    time.Time
		want       Outcome
		wantRetryN bool
	}{
		{"success", nil, now, OutcomeDone, false},
		{"unknown outcome", errors.New("timeout"), now, OutcomeRetry, true},
		{"permanent", Permanent(errors.New("422")), now, OutcomeDead, false},
		{"past max elapsed", errors.New("timeout"), now.Add(-time.Hour), OutcomeDead, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := &memQueue{jobs: []Job{{ID: 1, Kind: "k", Attempt: 1, FirstAttemptAt: tc.firstAt, LeaseUntil: now.Add(time.Minute)}}}
			h := Mux{"k": HandlerFunc(func(context.Context, Job) error { return tc.err })}
			p := NewPool(PoolConfig{Policy: policy}, q, h).WithClock(func() time.Time { return now })
			if n, err := p.RunOnce(context.Background(), "w"); n != 1 || err != nil {
				t.Fatalf("RunOnce = %d, %v", n, err)
			}
			if len(q.settled) != 1 || q.settled[0].Outcome != tc.want {
				t.Fatalf("settled = %+v, want outcome %s", q.settled, tc.want)
			}
			if a := q.settled[0]; tc.wantRetryN && (a.NextRunAt.Before(now.Add(900*time.Millisecond)) || a.NextRunAt.After(now.Add(1100*time.Millisecond))) {
				t.Fatalf("next run at %v, want about 1s after %v", a.NextRunAt, now)
			}
		})
	}
}

// TestPanickingHandlerDeadLettersItsJob: a handler that panics sends its
// job to the dead letters with the panic as its error, and the worker
// goes on (before, the panic ended the process, and after its lease the
// job ended the next instance's).
func TestPanickingHandlerDeadLettersItsJob(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	q := &memQueue{jobs: []Job{{ID: 1, Kind: "k", Attempt: 1, FirstAttemptAt: now, LeaseUntil: now.Add(time.Minute)},
		{ID: 2, Kind: "k", Attempt: 1, FirstAttemptAt: now, LeaseUntil: now.Add(time.Minute)}}}
	h := Mux{"k": HandlerFunc(func(_ context.Context, j Job) error {
		if j.ID == 1 {
			var m map[string]int
			m["poison"]++ // a nil map: panics
		}
		return nil
	})}
	p := NewPool(PoolConfig{Batch: 2, Policy: Policy{Initial: time.Second, Max: time.Minute, MaxElapsed: time.Hour,
		Multiplier: 2}}, q, h).WithClock(func() time.Time { return now })
	var logs bytes.Buffer
	p.log = slog.New(slog.NewJSONHandler(&logs, nil))
	if n, err := p.RunOnce(context.Background(), "w"); n != 2 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if len(q.settled) != 2 || q.settled[0].Outcome != OutcomeDead || !strings.Contains(q.settled[0].Err, "panicked") ||
		q.settled[1].Outcome != OutcomeDone {
		t.Fatalf("settled = %+v, want job 1 dead with its panic and job 2 done", q.settled)
	}
	// A dead letter needs a person: logged as such, at error level.
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"retry: job dead-lettered"`) {
		t.Fatalf("logs lack the dead letter at error level:\n%s", logs.String())
	}
}

func TestMuxRejectsUnknownKind(t *testing.T) {
	if err := (Mux{}).Handle(context.Background(), Job{Kind: "nope"}); !IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

// releasingQueue is a memQueue that records released claims.
type releasingQueue struct {
	memQueue
	released []uint64
}

func (q *releasingQueue) Release(_ context.Context, job Job, _ string) error {
	q.released = append(q.released, job.ID)
	return nil
}

// TestPoolGivesBackJobsWithoutTimeForAnAttempt: a batch shares one lease;
// once handling the first job has eaten into it so that a whole attempt
// and the time to store it (StoreReserve) no longer fit, the rest are
// given back instead of started, and each attempt's deadline lies within
// the lease.
func TestPoolGivesBackJobsWithoutTimeForAnAttempt(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	until := now.Add(30 * time.Second)
	q := &releasingQueue{memQueue: memQueue{jobs: []Job{
		{ID: 1, Kind: "k", Attempt: 1, LeaseUntil: until},
		{ID: 2, Kind: "k", Attempt: 1, LeaseUntil: until},
		{ID: 3, Kind: "k", Attempt: 1, LeaseUntil: until},
	}}}
	var handled []uint64
	h := Mux{"k": HandlerFunc(func(ctx context.Context, job Job) error {
		handled = append(handled, job.ID)
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > 10*time.Second {
			t.Errorf("attempt deadline %v (set %v), want within the 10s attempt timeout", d, ok)
		}
		// One attempt's 10s of the lease left: an attempt started now
		// would be stored after the lease ran out, and lost to a new claim.
		now = now.Add(20 * time.Second)
		return nil
	})}
	p := NewPool(PoolConfig{Lease: 30 * time.Second, AttemptTimeout: 10 * time.Second}, q, h).
		WithClock(func() time.Time { return now })
	if n, err := p.RunOnce(context.Background(), "w"); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v; want 1 attempted", n, err)
	}
	if len(handled) != 1 || handled[0] != 1 || len(q.settled) != 1 {
		t.Fatalf("handled %v, settled %+v; want only job 1", handled, q.settled)
	}
	if len(q.released) != 2 || q.released[0] != 2 || q.released[1] != 3 {
		t.Fatalf("released %v, want [2 3]", q.released)
	}
}

// TestWorkerIDsFitTheLedger: a 63-character host name (the most a
// Kubernetes pod gets) still yields worker ids within the ledger's 64
// characters, keeping the name's unique end.
func TestWorkerIDsFitTheLedger(t *testing.T) {
	host := strings.Repeat("payment-gateway-", 4)[:57] + "-x7k2q"
	p := NewPool(PoolConfig{Name: nameFor(host), Workers: 100}, &memQueue{}, Mux{})
	id := workerID(p.cfg.Name, 99)
	if len(id) > 64 || !strings.HasPrefix(id, host[len(host)-maxHostLen:]) || !strings.Contains(id, "-x7k2q-") {
		t.Fatalf("worker id %q (%d chars) from host %q", id, len(id), host)
	}
}

// shortLeaseQueue hands out, on every claim, a job whose lease is already
// too short for an attempt (as after a claim slowed by a busy database).
type shortLeaseQueue struct {
	releasingQueue
	now    time.Time
	claims atomic.Int64
}

func (q *shortLeaseQueue) Claim(context.Context, string, int, time.Duration) ([]Job, error) {
	q.claims.Add(1)
	return []Job{{ID: 1, Kind: "k", Attempt: 1, LeaseUntil: q.now.Add(5 * time.Second)}}, nil
}

func (q *shortLeaseQueue) Release(context.Context, Job, string) error { return nil }

// TestWorkerWaitsWhenNothingCouldStart: claims that yield only jobs it
// must give back (too little lease left for an attempt) count as "nothing
// to do": the worker waits its poll interval instead of claiming again at
// once, which would spin against a database that is already slow.
func TestWorkerWaitsWhenNothingCouldStart(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	q := &shortLeaseQueue{now: now}
	h := Mux{"k": HandlerFunc(func(context.Context, Job) error {
		t.Error("a job without time for an attempt was started")
		return nil
	})}
	p := NewPool(PoolConfig{Workers: 1, Lease: 30 * time.Second, AttemptTimeout: 10 * time.Second, Poll: 50 * time.Millisecond}, q, h).
		WithClock(func() time.Time { return now })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	p.Run(ctx)
	if n := q.claims.Load(); n > 10 {
		t.Fatalf("%d claims in 300 ms with a 50 ms poll: the worker spins", n)
	}
}

// TestErrorTextStaysValidUTF8: an attempt's error is cut to fit on a
// character boundary (a cut inside one cannot be stored in utf8mb4), and
// invalid bytes are replaced.
func TestErrorTextStaysValidUTF8(t *testing.T) {
	for _, in := range []string{strings.Repeat("库", 200), "a" + strings.Repeat("库", 200), "bad \xff\xfe byte"} {
		out := truncate(in, maxErrorLen)
		if !utf8.ValidString(out) || len(out) > maxErrorLen || !strings.HasPrefix(in, out[:1]) {
			t.Fatalf("truncate(%q…) = %q (%d bytes)", in[:6], out, len(out))
		}
	}
}

// panicQueue panics in the first Claim and the first Complete, as a bug
// in a store would, then hands out its jobs one at a time.
type panicQueue struct {
	mu      sync.Mutex
	calls   map[string]int
	jobs    []Job
	settled []Attempt
}

func (q *panicQueue) once(what string) {
	q.calls[what]++
	if q.calls[what] == 1 {
		panic(what + " bug")
	}
}

func (q *panicQueue) Claim(context.Context, string, int, time.Duration) ([]Job, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.once("claim")
	if len(q.jobs) == 0 {
		return nil, nil
	}
	j := q.jobs[0]
	q.jobs = q.jobs[1:]
	return []Job{j}, nil
}

func (q *panicQueue) Complete(_ context.Context, a Attempt) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.once("complete")
	q.settled = append(q.settled, a)
	return nil
}
func (q *panicQueue) Retry(context.Context, Attempt) error { return nil }
func (q *panicQueue) Dead(context.Context, Attempt) error  { return nil }

// TestWorkerSurvivesAPanicOutsideItsHandler: a panic in a claim or in
// storing an outcome is logged and the worker goes on with the next jobs,
// instead of ending the process.
func TestWorkerSurvivesAPanicOutsideItsHandler(t *testing.T) {
	q := &panicQueue{calls: map[string]int{}, jobs: []Job{{ID: 1, Kind: "k", Attempt: 1}, {ID: 2, Kind: "k", Attempt: 1}}}
	p := NewPool(PoolConfig{Poll: time.Millisecond, Policy: Policy{Initial: time.Second}}, q,
		Mux{"k": HandlerFunc(func(context.Context, Job) error { return nil })})
	var logs bytes.Buffer
	p.log = slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for {
		q.mu.Lock()
		n := len(q.settled)
		q.mu.Unlock()
		if n == 1 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if len(q.settled) != 1 || q.settled[0].JobID != 2 {
		t.Fatalf("settled %+v, want job 2 done after the panics (job 1's store panicked)", q.settled)
	}
	if n := strings.Count(logs.String(), "retry: worker panicked"); n != 2 {
		t.Errorf("%d panics logged, want 2 (claim, store)", n)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
