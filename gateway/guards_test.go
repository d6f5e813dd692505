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
