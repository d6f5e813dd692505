package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

// TestPanickingBatchFailsItsCallers: a panic while applying a batch (here
// the nil store) answers each of its callers with an error (503, so WeChat
// Pay redelivers) instead of ending the process.
func TestPanickingBatchFailsItsCallers(t *testing.T) {
	b := &batcher{timeout: time.Second}
	// One update is applied on the batcher's goroutine, two of one order
	// each on a goroutine of their own.
	for _, n := range []int{1, 2} {
		items := make([]*batchItem, n)
		for i := range items {
			items[i] = &batchItem{ctx: context.Background(), done: make(chan error, 1)}
			items[i].u.OutTradeNo, items[i].u.Notice.NotifyID = "o-1", fmt.Sprintf("n-%d", i)
		}
		b.run(items)
		for _, it := range items {
			if err := <-it.done; err == nil || !strings.Contains(err.Error(), "panic") {
				t.Fatalf("batch of %d, %s: err = %v, want the panic as an error", n, it.u.Notice.NotifyID, err)
			}
		}
	}
	if status := Status(ledgerError(errors.New("apply notification n-1: panic: boom"))); status != 503 {
		t.Fatalf("a panicked apply is answered %d, want 503", status)
	}
}
