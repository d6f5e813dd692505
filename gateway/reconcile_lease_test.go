package gateway

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestADayIsHeldForAsLongAsItsRunMayGoOn: a run may take up to its
// Timeout (a slow bill download), and its lease on the day lasts at least
// that long: 59 minutes into a run bounded at an hour, another instance
// still cannot take the day. A lease shorter than the run would let a
// second run start beside the live one, repairing and storing the same
// day at once.
func TestADayIsHeldForAsLongAsItsRunMayGoOn(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		ctx := context.Background()
		t0 := base.Now()
		var ahead atomic.Int64
		s := base.WithClock(func() time.Time { return t0.Add(time.Duration(ahead.Load())) })
		day := ledger.DayOf(t0.Add(-24 * time.Hour))
		entered, release := make(chan struct{}), make(chan struct{})
		slow := &Reconciler{Store: s, Timeout: time.Hour, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			close(entered)
			<-release
			return nil, nil
		}}}
		done := make(chan error, 1)
		go func() {
			_, err := slow.Run(ctx, day, "slow")
			done <- err
		}()
		<-entered
		ahead.Store(int64(59 * time.Minute))
		_, err := s.ClaimReconciliation(ctx, day, time.Minute)
		close(release)
		if !errors.Is(err, ledger.ErrClaimed) {
			t.Fatalf("claim 59 minutes into a run bounded at an hour: err=%v, want ErrClaimed", err)
		}
		if err := <-done; err != nil {
			t.Fatalf("the run: %v", err)
		}
	})
}
