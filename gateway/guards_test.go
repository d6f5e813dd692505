package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// slowLocker grants the lock only after the caller's wait has run out.
type slowLocker struct {
	delay    time.Duration
	unlocked []string
}

func (l *slowLocker) TryLock(_ context.Context, key string, _ time.Duration) (string, bool, error) {
	time.Sleep(l.delay)
	return "token-" + key, true, nil
}

func (l *slowLocker) Unlock(_ context.Context, key, token string) error {
	l.unlocked = append(l.unlocked, key+"/"+token)
	return nil
}

// TestLockTakenLateIsGivenBack: a lock granted after the wait ran out is
// still released by the returned function, not left held until its TTL.
func TestLockTakenLateIsGivenBack(t *testing.T) {
	l := &slowLocker{delay: 20 * time.Millisecond}
	unlock := lockWith(context.Background(), l, "k", time.Minute, time.Millisecond)
	unlock()
	if len(l.unlocked) != 1 || l.unlocked[0] != "k/token-k" {
		t.Fatalf("unlocked %v, want [k/token-k]", l.unlocked)
	}
}

// heldLocker is a lock someone else holds: it counts the tries.
type heldLocker struct{ tries int }

func (l *heldLocker) TryLock(context.Context, string, time.Duration) (string, bool, error) {
	l.tries++
	return "", false, nil
}

func (l *heldLocker) Unlock(context.Context, string, string) error { return nil }

// TestWaitingOnAHeldLockBacksOff: a delivery waiting 500 ms on a lock
// another holds tries it about a dozen times (5, 10, 20, 40, then every
// 50 ms), not every 5 ms (100 tries, 200 Redis round trips).
func TestWaitingOnAHeldLockBacksOff(t *testing.T) {
	l := &heldLocker{}
	start := time.Now()
	lockWith(context.Background(), l, "k", time.Minute, 500*time.Millisecond)()
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Fatalf("gave up after %v, want the whole 500 ms wait", waited)
	}
	if l.tries > 16 {
		t.Fatalf("%d tries in 500 ms, want at most 16", l.tries)
	}
}

// redisLocker is a Redis Locker whose unlocks are counted and answered
// with err.
type redisLocker struct {
	unlocks int
	err     error
}

func (l *redisLocker) TryLock(context.Context, string, time.Duration) (string, bool, error) {
	return "token", true, nil
}

func (l *redisLocker) Unlock(context.Context, string, string) error {
	l.unlocks++
	return l.err
}

// TestUnlockWhileTheBreakerProbes: a Redis lock is left to its TTL while
// the breaker is open, but after the cool-down it is released even while
// another call holds the probe (it was skipped, and the key stayed locked
// for the TTL); the unlock leaves the probe alone, and its failure opens
// the breaker again.
func TestUnlockWhileTheBreakerProbes(t *testing.T) {
	ctx := context.Background()
	b := &Breaker{Cooldown: time.Second} // no pause of a loaded machine ends it before the checks
	redis := &redisLocker{}
	f := FallbackLocker{Primary: redis, Secondary: NewMemoryLocker(), Breaker: b}
	b.Fail(ctx)
	if err := f.Unlock(ctx, "k", "token"); err != nil || redis.unlocks != 0 {
		t.Fatalf("breaker open: %d unlocks (%v), want none", redis.unlocks, err)
	}
	time.Sleep(1100 * time.Millisecond)
	if ok, probe := b.Begin(); !ok || !probe {
		t.Fatalf("after the cool-down: Begin() = %v, %v; want the probe", ok, probe)
	}
	if err := f.Unlock(ctx, "k", "token"); err != nil || redis.unlocks != 1 {
		t.Fatalf("probe under way: %d unlocks (%v), want 1", redis.unlocks, err)
	}
	if ok, _ := b.Begin(); ok {
		t.Fatal("the unlock ended the probe under way")
	}
	redis.err = errors.New("i/o timeout")
	if err := f.Unlock(ctx, "k", "token"); err == nil || redis.unlocks != 2 || !b.Open() {
		t.Fatalf("failing Redis: %d unlocks (%v), open=%v; want 2, the error, the breaker open",
			redis.unlocks, err, b.Open())
	}
}

// redisGate is a Gate standing for Redis: it counts Finish calls.
type redisGate struct{ finishes int }

func (g *redisGate) Admit(context.Context, GateKeys, GateTTLs) (Admission, error) {
	return Admission{}, nil
}

func (g *redisGate) Finish(context.Context, GateKeys, string, bool, GateTTLs) error {
	g.finishes++
	return nil
}

// TestGateFinishWhileTheBreakerProbes: a notification's Finish that
// releases its Redis lock goes to Redis after the cool-down even while
// another call probes, as an unlock does; one that only marks a
// notification done (no token) waits for the probe.
func TestGateFinishWhileTheBreakerProbes(t *testing.T) {
	ctx := context.Background()
	b := &Breaker{Cooldown: 100 * time.Millisecond}
	redis := &redisGate{}
	g := FallbackGate{Primary: redis, Secondary: NewMemoryGate(10, NewMemoryLocker()), Breaker: b}
	b.Fail(ctx)
	time.Sleep(150 * time.Millisecond)
	if ok, probe := b.Begin(); !ok || !probe {
		t.Fatalf("after the cool-down: Begin() = %v, %v; want the probe", ok, probe)
	}
	if err := g.Finish(ctx, GateKeys{NotifyID: "n1"}, "", true, GateTTLs{Done: time.Minute}); err != nil || redis.finishes != 0 {
		t.Fatalf("mark only, probe under way: %d finishes (%v), want none", redis.finishes, err)
	}
	if err := g.Finish(ctx, GateKeys{NotifyID: "n1"}, "token", true, GateTTLs{Done: time.Minute}); err != nil || redis.finishes != 1 {
		t.Fatalf("lock release, probe under way: %d finishes (%v), want 1", redis.finishes, err)
	}
}

// TestMemoryLockerDropsExpiredLocks: locks nobody released are dropped
// once expired, so the map holds about the locks still held, not every
// key ever locked; a held lock stays, an expired one goes to the next
// caller, and its old holder's token releases nothing.
func TestMemoryLockerDropsExpiredLocks(t *testing.T) {
	ctx := context.Background()
	m := NewMemoryLocker()
	_, _, _ = m.TryLock(ctx, "held", time.Hour)
	stale, _, _ := m.TryLock(ctx, "k", time.Nanosecond)
	for i := range 10000 {
		if _, ok, _ := m.TryLock(ctx, fmt.Sprint("dead-", i), time.Nanosecond); !ok {
			t.Fatalf("lock %d refused", i)
		}
	}
	if n := len(m.locks); n > 1000 {
		t.Fatalf("%d locks kept with 10001 expired and 1 held, want at most 1000", n)
	}
	if _, ok, _ := m.TryLock(ctx, "held", time.Hour); ok {
		t.Fatal("a held lock was dropped")
	}
	fresh, ok, _ := m.TryLock(ctx, "k", time.Hour)
	if !ok {
		t.Fatal("an expired lock was refused")
	}
	_ = m.Unlock(ctx, "k", stale)
	if _, ok, _ := m.TryLock(ctx, "k", time.Hour); ok {
		t.Fatal("a stale token released the new holder's lock")
	}
	_ = m.Unlock(ctx, "k", fresh)
	if _, ok, _ := m.TryLock(ctx, "k", time.Hour); !ok {
		t.Fatal("the holder's token did not release its lock")
	}
}

// TestRedisPanicIsLoggedWithTheRequest: a Redis call that panics is
// logged with the request id of the request it served.
func TestRedisPanicIsLoggedWithTheRequest(t *testing.T) {
	logs := captureLogs(t)
	ctx := WithRequestID(context.Background(), "req-redis-panic")
	_, err := guard(ctx, "lock", func() (struct{}, error) { panic("kaboom") })
	if err == nil {
		t.Fatal("a panicking call returned no error")
	}
	lines := logLines(t, logs.String(), "redis call panicked")
	if len(lines) != 1 || lines[0]["request_id"] != "req-redis-panic" {
		t.Fatalf("panic lines = %v, want one with request_id req-redis-panic", lines)
	}
}
