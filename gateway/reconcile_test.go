package gateway

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// fakeBills serves trade bills from fn and records the days asked for.
type fakeBills struct {
	mu   sync.Mutex
	days []string
	fn   func(ctx context.Context, day string) ([]byte, error)
}

func (f *fakeBills) TradeBill(ctx context.Context, day string) ([]byte, error) {
	f.mu.Lock()
	f.days = append(f.days, day)
	f.mu.Unlock()
	if f.fn == nil {
		return nil, ErrNoStatement
	}
	return f.fn(ctx, day)
}

func (f *fakeBills) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.days...)
}

// TestReconcileOneRunPerDay: while one run (an instance, a request) holds
// a day, another run of it is refused with EIN_FLIGHT before downloading
// anything; a failed run hands the day back at once.
func TestReconcileOneRunPerDay(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		day := ledger.DayOf(s.Now().Add(-24 * time.Hour))
		entered, release := make(chan struct{}), make(chan struct{})
		slow := &Reconciler{Store: s, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			close(entered)
			<-release
			return nil, nil
		}}}
		done := make(chan error, 1)
		go func() {
			_, err := slow.Run(ctx, day, "first")
			done <- err
		}()
		<-entered
		other := &fakeBills{}
		second := &Reconciler{Store: s, Bills: other}
		if _, err := second.Run(ctx, day, "second"); ErrorCode(err) != CodeInFlight || len(other.asked()) != 0 {
			t.Fatalf("second run while the first holds the day: err=%v, downloads=%v", err, other.asked())
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("first run: %v", err)
		}
		failing := &Reconciler{Store: s, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			return nil, errors.New("connection reset")
		}}}
		if _, err := failing.Run(ctx, day, "failing"); ErrorCode(err) != CodeUnavailable {
			t.Fatalf("failing run: err=%v", err)
		}
		rep, err := second.Run(ctx, day, "second")
		if err != nil || rep.Runs != 2 || rep.RequestedBy != "second" {
			t.Fatalf("run after a failed one: %+v, %v", rep, err)
		}
	})
}
