package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestBatcherDropsUpdatesNobodyWaitsFor: an update whose caller gave up
// before its batch ran is answered with the caller's error and never
// reaches the store (nil here: touching it would panic).
func TestBatcherDropsUpdatesNobodyWaitsFor(t *testing.T) {
	b := &batcher{timeout: time.Second}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	late, stop := context.WithTimeout(context.Background(), time.Nanosecond)
	defer stop()
	time.Sleep(time.Millisecond)
	items := []*batchItem{{ctx: gone, done: make(chan error, 1)}, {ctx: late, done: make(chan error, 1)}}
	b.run(items)
	if err := <-items[0].done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v", err)
	}
	if err := <-items[1].done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller past its deadline: err = %v", err)
	}
}
