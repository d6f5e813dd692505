package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestShutdownDoesNotCutAnAttempt: shutdown begins while a handler is
// calling the other side. Its call goes on (bounded by AttemptTimeout):
// cut off, a half-made request leaves the outcome unknown, and the job is
// queried and retried though the call would have finished.
func TestShutdownDoesNotCutAnAttempt(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	q := &memQueue{jobs: []Job{{ID: 1, Kind: "k", Attempt: 1, FirstAttemptAt: now, LeaseUntil: now.Add(time.Minute)}}}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var cut error
	h := Mux{"k": HandlerFunc(func(hctx context.Context, _ Job) error {
		stop() // shutdown begins mid-call
		select {
		case <-hctx.Done():
			cut = hctx.Err()
		case <-time.After(100 * time.Millisecond): // the call's answer
		}
		return cut
	})}
	p := NewPool(PoolConfig{Lease: time.Minute, AttemptTimeout: 10 * time.Second}, q, h).WithClock(func() time.Time { return now })
	if n, err := p.RunOnce(ctx, "w"); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if cut != nil || len(q.settled) != 1 || q.settled[0].Outcome != OutcomeDone {
		t.Fatalf("attempt cut by shutdown (%v), settled %+v; want it finished and stored done", cut, q.settled)
	}
}

// TestAttemptTimeoutStaysWithinTheLease: an AttemptTimeout not below the
// lease becomes half the lease, so an attempt ends before its claim does
// (another worker may claim the job then, and both would call the other
// side at once); left as set, no job would ever have time to start.
func TestAttemptTimeoutStaysWithinTheLease(t *testing.T) {
	now := time.Now().UTC()
	q := &memQueue{jobs: []Job{{ID: 1, Kind: "k", Attempt: 1, FirstAttemptAt: now, LeaseUntil: now.Add(10 * time.Second)}}}
	var deadline time.Time
	h := Mux{"k": HandlerFunc(func(ctx context.Context, _ Job) error {
		deadline, _ = ctx.Deadline()
		return nil
	})}
	p := NewPool(PoolConfig{Lease: 10 * time.Second, AttemptTimeout: 20 * time.Second}, q, h)
	if n, err := p.RunOnce(context.Background(), "w"); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v; want the job attempted", n, err)
	}
	if left := time.Until(deadline); deadline.IsZero() || left > 5*time.Second {
		t.Fatalf("attempt deadline %v from now, want at most half the 10s lease", left)
	}
}

// TestZeroPolicyGetsDefaults: a Policy left zero, or with a multiplier
// below 1, backs off as backoff's defaults do: never retrying at once, in
// a loop, nor dead-lettering a job on its first transient failure.
func TestZeroPolicyGetsDefaults(t *testing.T) {
	for attempt, want := range map[int][2]time.Duration{1: {250 * time.Millisecond, 750 * time.Millisecond},
		100: {30 * time.Second, time.Minute}} {
		if d := (Policy{}).NextDelay(attempt); d < want[0] || d > want[1] {
			t.Fatalf("zero policy: NextDelay(%d) = %v, want within %v", attempt, d, want)
		}
	}
	shrinking := Policy{Initial: time.Second, Max: time.Minute, MaxElapsed: time.Hour, Multiplier: 0.5}
	if d := shrinking.NextDelay(5); d < time.Second/2 {
		t.Fatalf("multiplier 0.5: NextDelay(5) = %v, want it to grow from 1s (multiplier taken as the default)", d)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	q := &memQueue{jobs: []Job{{ID: 1, Kind: "k", Attempt: 1, FirstAttemptAt: now, LeaseUntil: now.Add(time.Minute)}}}
	h := Mux{"k": HandlerFunc(func(context.Context, Job) error { return errors.New("503") })}
	p := NewPool(PoolConfig{}, q, h).WithClock(func() time.Time { return now })
	if n, err := p.RunOnce(context.Background(), "w"); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if len(q.settled) != 1 || q.settled[0].Outcome != OutcomeRetry {
		t.Fatalf("zero policy, first transient failure: settled %+v; want it retried", q.settled)
	}
}
