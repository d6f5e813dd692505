package ledger_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestRefundsOfOneOrderWaitForTheGap: WeChat Pay refuses a refund
// application sent within a minute of the order's last. A refund asked
// for sooner is recorded unsent (no attempt, its amount reserved) and
// booked a gap after the order's last application or booked refund,
// whichever is later, so an order's refunds go out in the order they were
// asked for, a gap apart. Counting a refund's attempt before the gap since
// the last application only moves its next check; each attempt counted
// starts the gap again. Other orders are not held.
func TestRefundsOfOneOrderWaitForTheGap(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		st, at := clockedStore(s)
		start := *at
		paidOrder(t, st, "g1", 100)
		paidOrder(t, st, "g2", 100)
		create := func(no, refundNo string) *ledger.Refund {
			t.Helper()
			req := refundReq(no, refundNo, 10)
			req.CheckAt, req.Gap = at.Add(2*time.Minute), time.Minute
			r, err := st.CreateRefund(ctx, req)
			if err != nil {
				t.Fatalf("create %s: %v", refundNo, err)
			}
			return r
		}
		booked := func(r *ledger.Refund, when time.Time) {
			t.Helper()
			if r.Attempts != 0 || r.State != ledger.RefundCreated || !r.NextCheckAt.Equal(when) {
				t.Fatalf("%s: %s, %d attempts, next check %v; want CREATED unsent until %v",
					r.OutRefundNo, r.State, r.Attempts, r.NextCheckAt, when)
			}
		}
		if r := create("g1", "gap-1"); r.Attempts != 1 || !r.NextCheckAt.Equal(start.Add(2*time.Minute)) {
			t.Fatalf("first refund: %d attempts, next check %v; want sent, checked after the safety buffer", r.Attempts, r.NextCheckAt)
		}
		*at = start.Add(10 * time.Second)
		second := create("g1", "gap-2")
		booked(second, start.Add(time.Minute))
		*at = start.Add(20 * time.Second)
		third := create("g1", "gap-3")
		booked(third, start.Add(2*time.Minute)) // behind the second
		if got := refundedTotal(t, st, "g1"); got != 30 {
			t.Fatalf("g1 refunded %d, want 30 (the waiting refunds' amounts reserved)", got)
		}
		if r := create("g2", "gap-other"); r.Attempts != 1 {
			t.Fatalf("another order's refund: %d attempts, want sent at once", r.Attempts)
		}

		*at = start.Add(30 * time.Second)
		second = mustWait(t, st, second, start.Add(time.Minute))
		*at = start.Add(time.Minute)
		if sent := count(t, st, second); sent.Attempts != 1 {
			t.Fatalf("second refund at the end of the gap: %d attempts, want 1", sent.Attempts)
		}
		mustWait(t, st, third, start.Add(2*time.Minute)) // the gap runs from the second's send now
		*at = start.Add(70 * time.Second)
		booked(create("g1", "gap-4"), start.Add(3*time.Minute)) // behind the third, booked
		*at = start.Add(2 * time.Minute)
		if third, _ = st.Refund(ctx, "gap-3"); count(t, st, third).Attempts != 1 {
			t.Fatal("third refund not counted two gaps after the first")
		}
		*at = start.Add(10 * time.Minute)
		if fourth, _ := st.Refund(ctx, "gap-4"); count(t, st, fourth).Attempts != 1 {
			t.Fatal("fourth refund not counted, long after its slot")
		}
		*at = start.Add(12 * time.Minute)
		if r := create("g1", "gap-5"); r.Attempts != 1 {
			t.Fatalf("a refund long after the order's last: %d attempts, want sent at once", r.Attempts)
		}
		// A re-send held for the gap is booked too: a refund asked for
		// after it goes behind it.
		*at = start.Add(20 * time.Minute)
		resent := create("g2", "gap-6")
		*at = start.Add(20*time.Minute + 10*time.Second)
		mustWait(t, st, resent, start.Add(21*time.Minute))
		*at = start.Add(20*time.Minute + 20*time.Second)
		booked(create("g2", "gap-7"), start.Add(22*time.Minute))
	})
}

// mustWait counts r's attempt and wants ErrRefundWaits with the next
// check moved to until and nothing counted; it returns r as it is now.
func mustWait(t *testing.T, s *ledger.Store, r *ledger.Refund, until time.Time) *ledger.Refund {
	t.Helper()
	got, err := s.CountRefundAttempt(context.Background(), r.OutRefundNo, r.Version, s.Now().Add(time.Hour), time.Minute)
	if !errors.Is(err, ledger.ErrRefundWaits) {
		t.Fatalf("count %s at %v: %+v, %v; want ErrRefundWaits", r.OutRefundNo, s.Now(), got, err)
	}
	now, rerr := s.Refund(context.Background(), r.OutRefundNo)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if now.Attempts != r.Attempts || !now.NextCheckAt.Equal(until) || now.Version == r.Version {
		t.Fatalf("%s after the wait: %d attempts, next check %v, version %d (was %d); want %d, %v, a new version",
			r.OutRefundNo, now.Attempts, now.NextCheckAt, now.Version, r.Version, r.Attempts, until)
	}
	return now
}

func count(t *testing.T, s *ledger.Store, r *ledger.Refund) *ledger.Refund {
	t.Helper()
	got, err := s.CountRefundAttempt(context.Background(), r.OutRefundNo, r.Version, s.Now().Add(time.Hour), time.Minute)
	if err != nil {
		t.Fatalf("count %s at %v: %v", r.OutRefundNo, s.Now(), err)
	}
	return got
}

// TestOneOfTwoWaitingRefundsIsSent: two janitors (instances) counting two
// waiting refunds of one order at once: only one goes out, the other
// waits a gap more.
func TestOneOfTwoWaitingRefundsIsSent(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		st, at := clockedStore(s)
		start := *at
		paidOrder(t, st, "g3", 100)
		var waiting []*ledger.Refund
		for _, no := range []string{"race-0", "race-1", "race-2"} {
			req := refundReq("g3", no, 10)
			req.CheckAt, req.Gap = at.Add(2*time.Minute), time.Minute
			r, err := st.CreateRefund(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			waiting = append(waiting, r)
		}
		*at = start.Add(2 * time.Minute) // both due: race-1's slot and race-2's
		var wg sync.WaitGroup
		errs := make([]error, 2)
		gate := make(chan struct{})
		for i, r := range waiting[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				_, errs[i] = st.CountRefundAttempt(ctx, r.OutRefundNo, r.Version, at.Add(time.Hour), time.Minute)
			}()
		}
		close(gate)
		wg.Wait()
		sent, waits := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				sent++
			case errors.Is(err, ledger.ErrRefundWaits):
				waits++
			default:
				t.Fatalf("count: %v", err)
			}
		}
		if sent != 1 || waits != 1 {
			t.Fatalf("%d sent, %d waiting; want one of each (errors %v)", sent, waits, errs)
		}
	})
}

// clockedStore is s on a clock the test sets through the pointer; it
// starts at the current second.
func clockedStore(s *ledger.Store) (*ledger.Store, *time.Time) {
	at := time.Now().UTC().Truncate(time.Second)
	return s.WithClock(func() time.Time { return at }), &at
}
