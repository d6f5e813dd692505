package gateway

import (
	"context"
	"testing"
	"time"
)

// TestPanicInApplyReleasesTheLock: a notification whose apply panics (the
// router answers it 500, and WeChat Pay redelivers) leaves its lock free
// for the redelivery, not held for the lock's TTL.
func TestPanicInApplyReleasesTheLock(t *testing.T) {
	locks := NewMemoryLocker()
	p := NewProcessor(ProcessorConfig{LockTTL: time.Hour}, nil, NewMemoryGate(100, locks), locks, nil)
	t.Cleanup(func() { p.Close() })
	n := &Notice{ID: "n-panics", Nonce: "nonce-1", Timestamp: time.Now()}
	func() {
		defer func() {
			if v := recover(); v == nil {
				t.Fatal("apply's panic did not reach the caller")
			}
		}()
		_ = p.guarded(context.Background(), n, func() error { panic("boom") })
	}()
	if _, ok, _ := locks.TryLock(context.Background(), "notify:"+n.ID, time.Second); !ok {
		t.Fatal("the notification's lock is still held after its apply panicked")
	}
}
