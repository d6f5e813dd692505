package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestReadinessSharesOnePing: fifty probes at once cost the database one
// ping, and a failed ping answers them all.
func TestReadinessSharesOnePing(t *testing.T) {
	var r readiness
	var pings atomic.Int32
	down := errors.New("down")
	ping := func(ctx context.Context) error {
		pings.Add(1)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("ping without a deadline")
		}
		return down
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := r.check(context.Background(), ping); !errors.Is(err, down) {
				t.Errorf("check = %v, want the ping's error", err)
			}
		})
	}
	wg.Wait()
	if n := pings.Load(); n != 1 {
		t.Fatalf("%d pings for 50 probes within a second, want 1", n)
	}
}
