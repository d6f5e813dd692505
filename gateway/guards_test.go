package gateway

import (
	"context"
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
