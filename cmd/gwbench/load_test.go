package main

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestSignAllStopsWhenCancelled: once ctx ends, no worker starts signing
// another notification, and signAll reports why it stopped.
func TestSignAllStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var signed, late atomic.Int64
	var cancelled atomic.Bool
	_, err := signAll(ctx, 1_000_000, func(int) (wxpaysim.Notification, error) {
		if cancelled.Load() {
			late.Add(1)
		}
		if signed.Add(1) == 5 {
			cancel()
			cancelled.Store(true)
		}
		return wxpaysim.Notification{}, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("signAll after cancel: err %v, want context.Canceled", err)
	}
	// A worker may be past its check of ctx, about to sign, when ctx ends:
	// one more each at most.
	if n := late.Load(); n > int64(runtime.GOMAXPROCS(0)) {
		t.Fatalf("%d notifications signed after the cancel, want at most one per worker", n)
	}
}

// TestSignAllSignsEach: without cancellation every index is signed once,
// in its own slot.
func TestSignAllSignsEach(t *testing.T) {
	var calls atomic.Int64
	out, err := signAll(context.Background(), 1000, func(i int) (wxpaysim.Notification, error) {
		calls.Add(1)
		return wxpaysim.Notification{ID: strconv.Itoa(i)}, nil
	})
	if err != nil || len(out) != 1000 || calls.Load() != 1000 {
		t.Fatalf("signAll: %d out, %d calls, err %v", len(out), calls.Load(), err)
	}
	for i, n := range out {
		if n.ID != strconv.Itoa(i) {
			t.Fatalf("slot %d holds %q", i, n.ID)
		}
	}
}
