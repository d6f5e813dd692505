package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReadinessSharesOnePing: fifty probes at once cost the database one
// ping, and a failed ping answers them all. The probes start together and
// the ping takes a while, so they arrive while it runs: a check that only
// caches a finished ping would ping for each of them.
func TestReadinessSharesOnePing(t *testing.T) {
	var r readiness
	var pings atomic.Int32
	down := errors.New("down")
	ping := func(ctx context.Context) error {
		pings.Add(1)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("ping without a deadline")
		}
		time.Sleep(50 * time.Millisecond)
		return down
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Go(func() {
			<-start
			if err := r.check(context.Background(), ping); !errors.Is(err, down) {
				t.Errorf("check = %v, want the ping's error", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := pings.Load(); n != 1 {
		t.Fatalf("%d pings for 50 probes within a second, want 1", n)
	}
}
