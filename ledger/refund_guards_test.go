package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestStaleHolderCannotMakeASecondRefundUnderItsKey: a request's hold on
// its Idempotency-Key ran out before it recorded anything (stalled), and a
// retry with the same parameters took the key over and made its refund.
// The stalled request then wakes up and records its own refund under the
// same key: the key already names the retry's refund, so the stalled
// one's refund is refused (ErrConflict) and rolled back. One key, one
// refund: the order keeps only the retry's amount reserved.
func TestStaleHolderCannotMakeASecondRefundUnderItsKey(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "g-stale", 100)
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k-stale", "h-same", -time.Second, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, run, err := s.BeginIdempotent(ctx, "openid-1", "k-stale", "h-same", time.Minute, 24*time.Hour); err != nil || !run {
			t.Fatalf("takeover: run=%v err=%v", run, err)
		}
		retry := refundReq("g-stale", "rf-retry", 30)
		retry.IdemScope, retry.IdemKey, retry.IdemHash = "openid-1", "k-stale", "h-same"
		if _, err := s.CreateRefund(ctx, retry); err != nil {
			t.Fatalf("the retry's refund: %v", err)
		}
		stalled := refundReq("g-stale", "rf-stalled", 30)
		stalled.IdemScope, stalled.IdemKey, stalled.IdemHash = "openid-1", "k-stale", "h-same"
		if r, err := s.CreateRefund(ctx, stalled); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("the stalled holder's refund under a key naming another: %+v, %v; want ErrConflict", r, err)
		}
		if rs, _ := s.Refunds(ctx, "g-stale"); len(rs) != 1 || rs[0].OutRefundNo != "rf-retry" {
			t.Fatalf("refunds %+v, want only the retry's", rs)
		}
		if got := refundedTotal(t, s, "g-stale"); got != 30 {
			t.Fatalf("refunded_total = %d, want 30 (one refund for one key)", got)
		}
		k, run, err := s.BeginIdempotent(ctx, "openid-1", "k-stale", "h-same", -time.Second, 24*time.Hour)
		if !errors.Is(err, ledger.ErrInFlight) || run || k == nil || k.ResourceKey != "rf-retry" {
			t.Fatalf("the key after the stalled holder's refund: %+v run=%v err=%v; want it naming rf-retry", k, run, err)
		}
	})
}

// TestAttemptIsCountedOnlyOnAPendingRefund: CountRefundAttempt, the
// step before a refund goes (again) to WeChat Pay, refuses a refund that
// is no longer CREATED or UNKNOWN even at the version the caller read: a
// refund WeChat Pay holds, paid or closed is never sent again.
func TestAttemptIsCountedOnlyOnAPendingRefund(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "g-pend", 100)
		for i, st := range []ledger.RefundState{ledger.RefundProcessing, ledger.RefundAbnormal, ledger.RefundSuccess,
			ledger.RefundClosed, ledger.RefundFailed} {
			no := fmt.Sprintf("rf-pend-%d", i)
			if _, err := s.CreateRefund(ctx, refundReq("g-pend", no, 10)); err != nil {
				t.Fatal(err)
			}
			r, err := move(t, s, no, st)
			if err != nil || r.State != st {
				t.Fatalf("%s → %s: %+v, %v", no, st, r, err)
			}
			got, err := s.CountRefundAttempt(ctx, no, r.Version, time.Now().Add(time.Hour), 0)
			if !errors.Is(err, ledger.ErrNoChange) {
				t.Fatalf("attempt counted on a %s refund at its version: %+v, %v; want ErrNoChange", st, got, err)
			}
			if now, _ := s.Refund(ctx, no); now.Attempts != 1 || now.State != st || now.Version != r.Version {
				t.Fatalf("%s refund after the refused count: %+v; want it untouched", st, now)
			}
		}
	})
}

// TestConcurrentAttemptCountsOnce: several callers holding the same copy
// of a refund (version) count an attempt at once; exactly one may, so
// exactly one sends. The refund's row lock is what serialises them: the
// attempt's UPDATE is not conditional on the version.
func TestConcurrentAttemptCountsOnce(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for round := 0; round < 3; round++ {
			no, refundNo := fmt.Sprintf("g-cnt-%d", round), fmt.Sprintf("rf-cnt-%d", round)
			dueRefund(t, s, no, refundNo)
			r, err := s.Refund(ctx, refundNo)
			if err != nil {
				t.Fatal(err)
			}
			const callers = 12
			var wg, ready sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, callers)
			for i := 0; i < callers; i++ {
				wg.Add(1)
				ready.Add(1)
				go func() {
					defer wg.Done()
					ready.Done()
					<-start
					_, errs[i] = s.CountRefundAttempt(ctx, refundNo, r.Version, time.Now().Add(time.Hour), 0)
				}()
			}
			ready.Wait()
			close(start)
			wg.Wait()
			counted := 0
			for i, err := range errs {
				switch {
				case err == nil:
					counted++
				case !errors.Is(err, ledger.ErrNoChange):
					t.Errorf("caller %d: %v", i, err)
				}
			}
			now, err := s.Refund(ctx, refundNo)
			if err != nil {
				t.Fatal(err)
			}
			if counted != 1 || now.Attempts != r.Attempts+1 {
				t.Fatalf("round %d: %d callers counted an attempt, refund has %d attempts; want 1 and %d",
					round, counted, now.Attempts, r.Attempts+1)
			}
		}
	})
}

// TestReleaseKeepsAKeyThatNamesARefund: a request whose refund was
// committed under its key but that took the commit for a failure (its
// answer lost on the way back) releases the key. The key names the
// refund, so it stays: the client's retry with it continues that refund
// instead of making a second one.
func TestReleaseKeepsAKeyThatNamesARefund(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "g-rel", 100)
		held, _, err := s.BeginIdempotent(ctx, "openid-1", "k-rel", "h", time.Minute, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		createUnderKey(t, s, "g-rel", "k-rel", "rf-rel", 30)
		if err := s.ReleaseIdempotent(ctx, "openid-1", "k-rel", "h", held.LockedUntil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k-rel", "h", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrInFlight) {
			t.Fatalf("retry while the holder's lock lasts: err = %v, want ErrInFlight (the key kept)", err)
		}
		later := s.WithClock(func() time.Time { return time.Now().Add(2 * time.Minute) })
		k, run, err := later.BeginIdempotent(ctx, "openid-1", "k-rel", "h", time.Minute, 24*time.Hour)
		if err != nil || !run || k.ResourceKey != "rf-rel" {
			t.Fatalf("retry after the holder's lock: %+v run=%v err=%v; want it to continue rf-rel", k, run, err)
		}
	})
}

// TestOneOfTwoTakeoversOfALinkedKeyRuns: a key that names a refund and
// whose holder's lock ran out is taken over by two retries that read it
// at once. Only the first to land runs (continues the refund); the other,
// judging the row it read, loses and looks again (then EIN_FLIGHT).
func TestOneOfTwoTakeoversOfALinkedKeyRuns(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "g-two", 100)
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k-two", "h", -time.Second, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		createUnderKey(t, s, "g-two", "k-two", "rf-two", 30)
		stale, err := s.ReadIdemRow(ctx, "openid-1", "k-two")
		if err != nil {
			t.Fatal(err)
		}
		k, run, err := s.BeginIdempotent(ctx, "openid-1", "k-two", "h", time.Minute, 24*time.Hour)
		if err != nil || !run || k.ResourceKey != "rf-two" {
			t.Fatalf("first takeover: %+v run=%v err=%v; want it to continue rf-two", k, run, err)
		}
		if k, run, err := s.DecideOnStale(ctx, stale, "h", time.Minute, 24*time.Hour); k != nil || run || err != nil {
			t.Fatalf("second takeover judged on the row read before the first: %+v run=%v err=%v; want it to lose", k, run, err)
		}
	})
}

// TestConcurrentRefundsOfAnOrderAreSpaced: refunds of one order asked for
// at once with a gap are spaced as if asked one after another: one goes
// out now, each other is booked a gap after the one before it (WeChat Pay
// answers FREQUENCY_LIMITED to two within a minute, an unknown outcome).
// The payment row's lock is what orders them: the gap is read under it.
func TestConcurrentRefundsOfAnOrderAreSpaced(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		st, at := clockedStore(s)
		paidOrder(t, st, "g-conc", 100)
		const n = 6
		var wg, ready sync.WaitGroup
		start := make(chan struct{})
		got := make([]*ledger.Refund, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				ready.Done()
				<-start
				req := refundReq("g-conc", fmt.Sprintf("rf-conc-%d", i), 10)
				req.CheckAt, req.Gap = at.Add(2*time.Minute), time.Minute
				r, err := st.CreateRefund(context.Background(), req)
				if err != nil {
					t.Errorf("refund %d: %v", i, err)
				}
				got[i] = r
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
		sent, slots := 0, map[time.Time]bool{}
		for _, r := range got {
			switch {
			case r.Attempts == 1:
				sent++
			case r.Attempts == 0 && r.NextCheckAt != nil:
				slots[r.NextCheckAt.Truncate(time.Second)] = true
			}
		}
		if sent != 1 || len(slots) != n-1 {
			t.Fatalf("%d sent at once, %d distinct slots booked; want 1 and %d", sent, len(slots), n-1)
		}
		for k := 1; k < n; k++ {
			if !slots[at.Add(time.Duration(k)*time.Minute)] {
				t.Fatalf("slots %v, want one a minute apart after %v", slots, *at)
			}
		}
	})
}
