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

// TestSignAllStopsWhenCancelled: once ctx ends, no worker signs another
// notification, and signAll reports why it stopped.
func TestSignAllStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var signed atomic.Int64
	_, err := signAll(ctx, 1_000_000, func(int) (wxpaysim.Notification, error) {
		if signed.Add(1) == 5 {
			cancel()
		}
		return wxpaysim.Notification{}, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("signAll after cancel: err %v, want context.Canceled", err)
	}
	// Each worker may finish the one it started when ctx ended.
	if n := signed.Load(); n > int64(5+runtime.GOMAXPROCS(0)) {
		t.Fatalf("%d notifications signed after cancelling at the 5th", n)
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
