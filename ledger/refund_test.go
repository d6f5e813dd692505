package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// paidOrder records a paid order of amount fen by openid-1.
func paidOrder(t *testing.T, s *ledger.Store, no string, amount int64) {
	t.Helper()
	if _, err := s.ApplyTransaction(context.Background(), paid("n-"+no, no, "tx-"+no, amount)); err != nil {
		t.Fatalf("pay %s: %v", no, err)
	}
}

func refundReq(no, refundNo string, amount int64) ledger.RefundRequest {
	return ledger.RefundRequest{OutTradeNo: no, OutRefundNo: refundNo, Amount: amount, Requester: "openid-1",
		CheckAt: time.Now().Add(time.Minute)}
}

func refundedTotal(t *testing.T, s *ledger.Store, no string) int64 {
	t.Helper()
	p, err := s.Payment(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	return p.RefundedTotal
}

func TestCreateRefundMoneyRules(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r1", 100)
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "r-unpaid", AmountTotal: 50,
			PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		stranger := refundReq("r1", "rf-x", 10)
		stranger.Requester = "openid-2"
		cases := []struct {
			name string
			req  ledger.RefundRequest
			want func(error) bool
		}{
			{"unknown order", refundReq("nope", "rf-a", 10), func(err error) bool { return errors.Is(err, ledger.ErrNotFound) }},
			{"other user", stranger, func(err error) bool { return errors.Is(err, ledger.ErrNotOwner) }},
			{"unpaid", refundReq("r-unpaid", "rf-b", 10), func(err error) bool { return errors.Is(err, ledger.ErrNotRefundable) }},
			{"over amount", refundReq("r1", "rf-c", 101), func(err error) bool {
				var e *ledger.RefundExceedsError
				return errors.As(err, &e) && e.Remaining == 100
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := s.CreateRefund(ctx, tc.req); !tc.want(err) {
					t.Fatalf("err = %v", err)
				}
			})
		}
		if got := refundedTotal(t, s, "r1"); got != 0 {
			t.Fatalf("refunded_total = %d after refusals, want 0", got)
		}
		if _, err := s.CreateRefund(ctx, refundReq("r1", "rf-1", 60)); err != nil {
			t.Fatalf("partial refund: %v", err)
		}
		if _, err := s.CreateRefund(ctx, refundReq("r1", "rf-1", 60)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("same out_refund_no again: err = %v", err)
		}
		var exceeds *ledger.RefundExceedsError
		if _, err := s.CreateRefund(ctx, refundReq("r1", "rf-2", 41)); !errors.As(err, &exceeds) {
			t.Fatalf("over the remainder: err = %v", err)
		}
		if _, err := s.CreateRefund(ctx, refundReq("r1", "rf-3", 40)); err != nil {
			t.Fatalf("rest: %v", err)
		}
		if got := refundedTotal(t, s, "r1"); got != 100 {
			t.Fatalf("refunded_total = %d, want 100", got)
		}
	})
}

func move(t *testing.T, s *ledger.Store, refundNo string, to ledger.RefundState) (*ledger.Refund, error) {
	t.Helper()
	return s.ApplyRefund(context.Background(), ledger.RefundUpdate{OutRefundNo: refundNo, State: to, Source: ledger.SourceQuery})
}

func TestRefundStateMachine(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r2", 100)
		for _, no := range []string{"rf-s", "rf-c", "rf-f"} {
			if _, err := s.CreateRefund(ctx, refundReq("r2", no, 30)); err != nil {
				t.Fatal(err)
			}
		}
		steps := []struct {
			no   string
			to   ledger.RefundState
			want error
		}{
			{"rf-s", ledger.RefundUnknown, nil},
			{"rf-s", ledger.RefundProcessing, nil},
			{"rf-s", ledger.RefundProcessing, ledger.ErrAlreadyRecorded},
			{"rf-s", ledger.RefundSuccess, nil},
			{"rf-s", ledger.RefundAbnormal, ledger.ErrNoChange}, // late, must not move back
			{"rf-s", ledger.RefundClosed, ledger.ErrNoChange},
			{"rf-c", ledger.RefundProcessing, nil},
			{"rf-c", ledger.RefundAbnormal, nil},
			{"rf-c", ledger.RefundClosed, nil},
			{"rf-f", ledger.RefundFailed, nil},
			{"nope", ledger.RefundSuccess, ledger.ErrNotFound},
		}
		for i, st := range steps {
			_, err := move(t, s, st.no, st.to)
			if (st.want == nil && err != nil) || (st.want != nil && !errors.Is(err, st.want)) {
				t.Fatalf("step %d %s → %s: err = %v, want %v", i, st.no, st.to, err, st.want)
			}
		}
		if got := refundedTotal(t, s, "r2"); got != 30 {
			t.Fatalf("refunded_total = %d, want 30 (CLOSED and FAILED give back)", got)
		}
		r, _ := s.Refund(ctx, "rf-s")
		if r.State != ledger.RefundSuccess || r.SuccessTime == nil {
			t.Fatalf("rf-s = %+v", r)
		}
		h, _ := s.History(ctx, "r2")
		if len(h) != 1+3+3+3+1 { // payment + 3 created + rf-s 3 moves + rf-c 3 + rf-f 1
			t.Fatalf("history has %d rows: %+v", len(h), h)
		}
	})
}

func TestRefundNoticeStoredOnce(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r3", 100)
		if _, err := s.CreateRefund(ctx, refundReq("r3", "rf-n", 100)); err != nil {
			t.Fatal(err)
		}
		u := ledger.RefundUpdate{OutRefundNo: "rf-n", State: ledger.RefundClosed, Amount: 100, Source: ledger.SourceCallback,
			Notice: &ledger.Notice{NotifyID: "rn-1", Source: ledger.SourceCallback, EventType: "REFUND.CLOSED",
				ResourceType: "encrypt-resource", OutTradeNo: "r3", OutRefundNo: "rf-n", Plaintext: "{}"}}
		if _, err := s.ApplyRefund(ctx, u); err != nil {
			t.Fatalf("closed: %v", err)
		}
		if _, err := s.ApplyRefund(ctx, u); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("duplicate: err = %v", err)
		}
		late := u
		late.State, late.Notice = ledger.RefundSuccess, &ledger.Notice{NotifyID: "rn-2", Source: ledger.SourceCallback,
			EventType: "REFUND.SUCCESS", OutTradeNo: "r3", OutRefundNo: "rf-n", Plaintext: "{}"}
		if _, err := s.ApplyRefund(ctx, late); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("late success after closed: err = %v", err)
		}
		if got := refundedTotal(t, s, "r3"); got != 0 {
			t.Fatalf("refunded_total = %d, want 0", got)
		}
		notices, _ := s.Notices(ctx, "r3")
		if len(notices) != 3 { // payment + two refund notices
			t.Fatalf("%d notices stored, want 3", len(notices))
		}
	})
}

// TestConcurrentRefundsNeverExceedPaid fires 50 refunds of 7 fen at an
// order of 100 fen at once.
func TestConcurrentRefundsNeverExceedPaid(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		paidOrder(t, s, "r4", 100)
		var ok, refused atomic.Int64
		// All 50 wait on start, so the refunds overlap instead of running
		// one after another as the goroutines happen to be scheduled.
		var wg, ready sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 50; i++ {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				ready.Done()
				<-start
				_, err := s.CreateRefund(context.Background(), refundReq("r4", fmt.Sprintf("rf-%d", i), 7))
				var exceeds *ledger.RefundExceedsError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &exceeds):
					refused.Add(1)
				default:
					t.Errorf("refund %d: %v", i, err)
				}
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()
		if ok.Load() != 14 || refused.Load() != 36 {
			t.Fatalf("accepted %d, refused %d; want 14 and 36", ok.Load(), refused.Load())
		}
		if got := refundedTotal(t, s, "r4"); got != 98 {
			t.Fatalf("refunded_total = %d, want 98", got)
		}
	})
}

func TestIdempotencyKeys(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		_, run, err := s.BeginIdempotent(ctx, "u1", "k1", "h1", time.Minute, 24*time.Hour)
		if err != nil || !run {
			t.Fatalf("first begin: run=%v err=%v", run, err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "u1", "k1", "h1", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrInFlight) {
			t.Fatalf("in flight: err = %v", err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "u1", "k1", "h2", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrIdempotencyMismatch) {
			t.Fatalf("other params: err = %v", err)
		}
		if _, run, err := s.BeginIdempotent(ctx, "u2", "k1", "h2", time.Minute, 24*time.Hour); err != nil || !run {
			t.Fatalf("other scope: run=%v err=%v", run, err)
		}
		if err := s.FinishIdempotent(ctx, "u1", "k1", "h1", 201, []byte(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		k, run, err := s.BeginIdempotent(ctx, "u1", "k1", "h1", time.Minute, 24*time.Hour)
		if err != nil || run || k.StatusCode != 201 || string(k.ResponseBody) != `{"a":1}` {
			t.Fatalf("replay: %+v run=%v err=%v", k, run, err)
		}
		// A crashed holder: the lock ran out, the next request takes over
		// and learns which refund to continue.
		paidOrder(t, s, "r5", 100)
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k2", "h", -time.Second, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		createUnderKey(t, s, "r5", "k2", "rf-k2", 10)
		k, run, err = s.BeginIdempotent(ctx, "openid-1", "k2", "h", time.Minute, 24*time.Hour)
		if err != nil || !run || k.ResourceKey != "rf-k2" {
			t.Fatalf("takeover: %+v run=%v err=%v", k, run, err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k2", "h-other", -time.Second, 24*time.Hour); !errors.Is(err, ledger.ErrIdempotencyMismatch) {
			t.Fatalf("other params for a key that made a refund: err = %v, want a mismatch", err)
		}
		// A holder that died before making anything (its release lost):
		// once its lock runs out, a retry with corrected parameters runs.
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k3", "h-wrong", -time.Second, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		k, run, err = s.BeginIdempotent(ctx, "openid-1", "k3", "h-right", time.Minute, 24*time.Hour)
		if err != nil || !run || k.ResourceKey != "" {
			t.Fatalf("a key whose holder made nothing, with other parameters: %+v run=%v err=%v; want it to run", k, run, err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k3", "h-wrong", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrIdempotencyMismatch) {
			t.Fatalf("the old parameters after the corrected retry took the key: err = %v, want a mismatch", err)
		}
	})
}

// TestKeyOfARefundNeverExpires: a key past its expiry that names a
// refund is still replayed (or refused for other parameters) and never
// pruned, so a client retrying days later gets its refund, not a second
// one; a key past expiry that names nothing is pruned and runs afresh.
func TestKeyOfARefundNeverExpires(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r-old", 100)
		for _, key := range []string{"k-old", "k-old-2", "k-none"} { // expired as soon as made
			if _, _, err := s.BeginIdempotent(ctx, "openid-1", key, "h", -time.Second, -time.Second); err != nil {
				t.Fatal(err)
			}
		}
		for _, key := range []string{"k-old", "k-old-2"} {
			createUnderKey(t, s, "r-old", key, "rf-"+key, 10)
		}
		if err := s.FinishIdempotent(ctx, "openid-1", "k-old", "h", 201, []byte(`{"out_refund_no":"rf-k-old"}`)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.PruneIdempotent(ctx, 100); err != nil || n != 1 {
			t.Fatalf("prune: %d, %v; want only the key that names nothing", n, err)
		}
		k, run, err := s.BeginIdempotent(ctx, "openid-1", "k-old", "h", time.Minute, 24*time.Hour)
		if err != nil || run || k.ResourceKey != "rf-k-old" || k.StatusCode != 201 {
			t.Fatalf("retry after expiry: %+v run=%v err=%v; want the stored answer replayed", k, run, err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k-old", "h-other", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrIdempotencyMismatch) {
			t.Fatalf("other parameters after expiry: err = %v, want a mismatch", err)
		}
		// In flight, its holder gone: taken over to settle its refund.
		k, run, err = s.BeginIdempotent(ctx, "openid-1", "k-old-2", "h", time.Minute, 24*time.Hour)
		if err != nil || !run || k.ResourceKey != "rf-k-old-2" {
			t.Fatalf("an expired key in flight: %+v run=%v err=%v; want a takeover of rf-k-old-2", k, run, err)
		}
		if k, run, err := s.BeginIdempotent(ctx, "openid-1", "k-none", "h", time.Minute, 24*time.Hour); err != nil || !run || k.ResourceKey != "" {
			t.Fatalf("a pruned key: %+v run=%v err=%v; want a fresh run", k, run, err)
		}
	})
}

// TestTakeOverDoesNotUndoALink: a retry judges a key an orphan (in
// flight, its lock run out, no refund named) from a row it read; before
// its takeover lands, the holder commits the refund it made under the
// key. The takeover must then lose, not reset the key and run afresh: a
// second refund for one key.
func TestTakeOverDoesNotUndoALink(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r9", 100)
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k9", "h", -time.Second, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		stale, err := s.ReadIdemRow(ctx, "openid-1", "k9")
		if err != nil {
			t.Fatal(err)
		}
		createUnderKey(t, s, "r9", "k9", "rf-k9", 10)
		if k, run, err := s.DecideOnStale(ctx, stale, "h-other", time.Minute, 24*time.Hour); k != nil || run || err != nil {
			t.Fatalf("takeover judged on the stale row: %+v run=%v err=%v; want it to lose the race", k, run, err)
		}
		k, run, err := s.BeginIdempotent(ctx, "openid-1", "k9", "h", time.Minute, 24*time.Hour)
		if err != nil || !run || k.ResourceKey != "rf-k9" {
			t.Fatalf("retry after the link: %+v run=%v err=%v; want it to continue rf-k9", k, run, err)
		}
	})
}

// TestTakenOverHolderCannotReleaseTheRetrysKey: a request whose hold ran
// out and whose key a retry with the same parameters took over is then
// refused (before recording anything) and releases its key: the retry's
// key stays, and the retry's refund is made under it.
func TestTakenOverHolderCannotReleaseTheRetrysKey(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r11", 100)
		held, _, err := s.BeginIdempotent(ctx, "openid-1", "k11", "h-same", -time.Second, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, run, err := s.BeginIdempotent(ctx, "openid-1", "k11", "h-same", time.Minute, 24*time.Hour); err != nil || !run {
			t.Fatalf("takeover: run=%v err=%v", run, err)
		}
		if err := s.ReleaseIdempotent(ctx, "openid-1", "k11", "h-same", held.LockedUntil); err != nil {
			t.Fatal(err)
		}
		req := refundReq("r11", "rf-retry", 20)
		req.IdemScope, req.IdemKey, req.IdemHash = "openid-1", "k11", "h-same"
		if _, err := s.CreateRefund(ctx, req); err != nil {
			t.Fatalf("the retry's refund after the old holder's release: %v", err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k11", "h-same", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrInFlight) {
			t.Fatalf("the key after the old holder's release: err = %v, want still the retry's, in flight", err)
		}
	})
}

// TestReleaseForgetsTheHoldersKey: a request refused before recording
// anything releases its key, so a retry starts afresh.
func TestReleaseForgetsTheHoldersKey(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		held, _, err := s.BeginIdempotent(ctx, "openid-1", "k12", "h-1", time.Minute, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ReleaseIdempotent(ctx, "openid-1", "k12", "h-1", held.LockedUntil); err != nil {
			t.Fatal(err)
		}
		if _, run, err := s.BeginIdempotent(ctx, "openid-1", "k12", "h-2", time.Minute, 24*time.Hour); err != nil || !run {
			t.Fatalf("a retry with other parameters after the release: run=%v err=%v, want a fresh key", run, err)
		}
	})
}

// TestTakenOverHolderCannotLinkOrFinish: the other order of the same
// race. A retry with other parameters takes over a key whose holder
// seemed dead (its lock ran out, nothing linked); the holder then wakes
// up. Its refund is not linked to the key (its transaction rolls back:
// no refund), and its finish or release do not touch the retry's key.
func TestTakenOverHolderCannotLinkOrFinish(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r10", 100)
		held, _, err := s.BeginIdempotent(ctx, "openid-1", "k10", "h-old", -time.Second, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, run, err := s.BeginIdempotent(ctx, "openid-1", "k10", "h-new", time.Minute, 24*time.Hour); err != nil || !run {
			t.Fatalf("takeover: run=%v err=%v", run, err)
		}
		old := refundReq("r10", "rf-old", 10)
		old.IdemScope, old.IdemKey, old.IdemHash = "openid-1", "k10", "h-old"
		if _, err := s.CreateRefund(ctx, old); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("the old holder's refund: err = %v, want ErrConflict", err)
		}
		if err := s.FinishIdempotent(ctx, "openid-1", "k10", "h-old", 201, []byte(`{"old":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.ReleaseIdempotent(ctx, "openid-1", "k10", "h-old", held.LockedUntil); err != nil {
			t.Fatal(err)
		}
		req := refundReq("r10", "rf-new", 20)
		req.IdemScope, req.IdemKey, req.IdemHash = "openid-1", "k10", "h-new"
		if _, err := s.CreateRefund(ctx, req); err != nil {
			t.Fatalf("the retry's refund: %v", err)
		}
		if rs, _ := s.Refunds(ctx, "r10"); len(rs) != 1 || rs[0].OutRefundNo != "rf-new" || refundedTotal(t, s, "r10") != 20 {
			t.Fatalf("refunds %+v, want only the retry's", rs)
		}
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k10", "h-new", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrInFlight) {
			t.Fatalf("the key after the old holder's finish: err = %v, want still the retry's, in flight", err)
		}
	})
}

func TestClaimStuckRefunds(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		dueRefund(t, s, "r6", "rf-stuck")
		if _, err := s.CreateRefund(ctx, refundReq("r6", "rf-fresh", 10)); err != nil {
			t.Fatal(err)
		}
		got, err := s.ClaimStuckRefunds(ctx, s.Now(), 10, time.Minute)
		if err != nil || len(got) != 1 || got[0].OutRefundNo != "rf-stuck" {
			t.Fatalf("claimed %+v, err %v; want rf-stuck", got, err)
		}
		if again, err := s.ClaimStuckRefunds(ctx, s.Now(), 10, time.Minute); err != nil || len(again) != 0 {
			t.Fatalf("second claim = %+v, err %v; want none claimed twice", again, err)
		}
	})
}

// TestClaimNeedsTheRefundStillDue: an answer recorded between a claim's
// read and its update may set the next check later without a new version
// (a same-state answer only touches it): the claim then leaves the refund
// alone rather than bring its next check forward to the lease's end.
func TestClaimNeedsTheRefundStillDue(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		dueRefund(t, s, "r6b", "rf-touched")
		later := time.Now().Add(time.Hour)
		touched := false
		err := s.DB().Callback().Query().After("gorm:query").Register("test:touch_after_read", func(db *gorm.DB) {
			if db.Statement.Table == "refunds" && !touched {
				touched = true
				if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-touched", State: ledger.RefundCreated,
					Source: ledger.SourceQuery, NextCheckAt: later}); !errors.Is(err, ledger.ErrAlreadyRecorded) {
					t.Errorf("touch: %v", err)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.DB().Callback().Query().Remove("test:touch_after_read")
		got, err := s.ClaimStuckRefunds(ctx, s.Now(), 10, time.Minute)
		if err != nil || len(got) != 0 || !touched {
			t.Fatalf("claimed %+v (%v) after its next check moved an hour on; want none", got, err)
		}
		if r, _ := s.Refund(ctx, "rf-touched"); r.NextCheckAt == nil || r.NextCheckAt.Before(later.Add(-time.Second)) {
			t.Fatalf("next check %v, want the touch's %v kept", r.NextCheckAt, later)
		}
	})
}

// TestRefundAttemptNeedsTheVersionClaimed: a janitor whose claim ran out
// and was taken by another instance cannot count (and so send) an attempt
// on its stale copy; only the current claimant can, once.
func TestRefundAttemptNeedsTheVersionClaimed(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		dueRefund(t, s, "r7", "rf-lease")
		first, err := s.ClaimStuckRefunds(ctx, s.Now(), 10, time.Minute)
		if err != nil || len(first) != 1 {
			t.Fatalf("first claim %+v, %v", first, err)
		}
		later := s.WithClock(func() time.Time { return time.Now().Add(2 * time.Minute) })
		second, err := later.ClaimStuckRefunds(ctx, later.Now(), 10, time.Minute)
		if err != nil || len(second) != 1 || second[0].Version == first[0].Version {
			t.Fatalf("second claim after the lease %+v, %v", second, err)
		}
		next := time.Now().Add(time.Hour)
		if _, err := s.CountRefundAttempt(ctx, "rf-lease", first[0].Version, next, 0); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("stale claimant counted an attempt: err = %v, want ErrNoChange", err)
		}
		r, err := s.CountRefundAttempt(ctx, "rf-lease", second[0].Version, next, 0)
		if err != nil || r.Attempts != second[0].Attempts+1 {
			t.Fatalf("current claimant: %+v, %v", r, err)
		}
		if _, err := s.CountRefundAttempt(ctx, "rf-lease", second[0].Version, next, 0); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("same copy counted twice: err = %v", err)
		}
	})
}

// TestVerdictOnAnEarlierAttemptIsRefused: a FAILED tied to an attempt
// is not recorded once the refund was sent again; tied to the latest, it
// is, and gives the amount back.
func TestVerdictOnAnEarlierAttemptIsRefused(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		dueRefund(t, s, "r8", "rf-attempt")
		r, err := s.Refund(ctx, "rf-attempt")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CountRefundAttempt(ctx, "rf-attempt", r.Version, time.Now().Add(time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		failed := ledger.RefundUpdate{OutRefundNo: "rf-attempt", State: ledger.RefundFailed, Source: ledger.SourceAPI,
			LastError: "refused", Attempt: 1}
		if _, err := s.ApplyRefund(ctx, failed); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("FAILED about attempt 1 of 2: err = %v, want ErrNoChange", err)
		}
		if p, _ := s.Payment(ctx, "r8"); p.RefundedTotal != 10 {
			t.Fatalf("refunded %d after the stale verdict, want 10 still held", p.RefundedTotal)
		}
		failed.Attempt = 2
		if got, err := s.ApplyRefund(ctx, failed); err != nil || got.State != ledger.RefundFailed {
			t.Fatalf("FAILED about the latest attempt: %+v, %v", got, err)
		}
		if p, _ := s.Payment(ctx, "r8"); p.RefundedTotal != 0 {
			t.Fatalf("refunded %d after FAILED, want 0", p.RefundedTotal)
		}
	})
}

// TestRefundAmountMismatchIsFlagged: WeChat stating another amount for a
// refund changes nothing and is flagged, once per (re)delivery.
func TestRefundAmountMismatchIsFlagged(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r40", 100)
		if _, err := s.CreateRefund(ctx, refundReq("r40", "rf-40", 60)); err != nil {
			t.Fatal(err)
		}
		u := ledger.RefundUpdate{OutRefundNo: "rf-40", State: ledger.RefundSuccess, Amount: 70, Source: ledger.SourceCallback,
			Notice: &ledger.Notice{NotifyID: "rn-40", Source: ledger.SourceCallback, EventType: "REFUND.SUCCESS",
				OutTradeNo: "r40", OutRefundNo: "rf-40", Plaintext: "{}"}}
		for range 2 {
			var mm *ledger.AmountMismatchError
			if _, err := s.ApplyRefund(ctx, u); !errors.As(err, &mm) {
				t.Fatalf("err = %v, want AmountMismatchError", err)
			}
		}
		if r, _ := s.Refund(ctx, "rf-40"); r.State != ledger.RefundCreated {
			t.Fatalf("refund state = %s, want CREATED", r.State)
		}
		a, _ := s.Anomalies(ctx, "r40")
		if len(a) != 1 || a[0].Kind != ledger.AnomalyRefundAmountMismatch || a[0].SeenCount != 2 {
			t.Fatalf("anomalies = %+v, want one REFUND_AMOUNT_MISMATCH seen twice", a)
		}
		// The janitor's query saying the same keeps its next check (the
		// rollback would otherwise leave the short claim, and the refund
		// be asked about every 30 s for good).
		next := s.Now().Add(time.Hour).Truncate(time.Second)
		q := ledger.RefundUpdate{OutRefundNo: "rf-40", State: ledger.RefundSuccess, Amount: 70, Source: ledger.SourceQuery, NextCheckAt: next}
		var mm *ledger.AmountMismatchError
		if _, err := s.ApplyRefund(ctx, q); !errors.As(err, &mm) {
			t.Fatalf("err = %v, want AmountMismatchError", err)
		}
		if r, _ := s.Refund(ctx, "rf-40"); r.NextCheckAt == nil || !r.NextCheckAt.Equal(next) {
			t.Fatalf("next check = %v, want %v", r.NextCheckAt, next)
		}
		// A refund that ended meanwhile is not put back on the janitor's
		// list by a mismatching answer that raced its end.
		if _, err := move(t, s, "rf-40", ledger.RefundSuccess); err != nil {
			t.Fatal(err)
		}
		if r, _ := s.Refund(ctx, "rf-40"); r.NextCheckAt != nil {
			t.Fatalf("SUCCESS refund still checked at %v", r.NextCheckAt)
		}
		if _, err := s.ApplyRefund(ctx, q); !errors.As(err, &mm) {
			t.Fatalf("err = %v, want AmountMismatchError", err)
		}
		if r, _ := s.Refund(ctx, "rf-40"); r.NextCheckAt != nil {
			t.Fatalf("ended refund put back on the janitor's list for %v", r.NextCheckAt)
		}
		// Nor a FAILED one (the janitor claims FAILED refunds that have a
		// next check, to wait for a late SUCCESS): it would be asked about
		// for good.
		if _, err := s.CreateRefund(ctx, refundReq("r40", "rf-40f", 10)); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-40f", ledger.RefundFailed); err != nil {
			t.Fatal(err)
		}
		qf := ledger.RefundUpdate{OutRefundNo: "rf-40f", State: ledger.RefundSuccess, Amount: 11, Source: ledger.SourceQuery, NextCheckAt: next}
		if _, err := s.ApplyRefund(ctx, qf); !errors.As(err, &mm) {
			t.Fatalf("err = %v, want AmountMismatchError", err)
		}
		if r, _ := s.Refund(ctx, "rf-40f"); r.State != ledger.RefundFailed || r.NextCheckAt != nil {
			t.Fatalf("FAILED refund %s put on the janitor's list for %v", r.State, r.NextCheckAt)
		}
		claimed, err := s.ClaimStuckRefunds(ctx, next.Add(time.Hour), 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range claimed {
			if r.OutRefundNo == "rf-40f" {
				t.Fatal("the janitor claimed the FAILED refund")
			}
		}
	})
}

// TestJanitorsOwnFailedIsNoContradiction: the janitor keeping a waiting
// FAILED refund as it is (a query that told nothing) after a notification
// recorded its SUCCESS meanwhile is refused, but flags nothing: WeChat Pay
// never says FAILED.
func TestJanitorsOwnFailedIsNoContradiction(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r41", 100)
		if _, err := s.CreateRefund(ctx, refundReq("r41", "rf-41", 60)); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-41", ledger.RefundSuccess); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-41", ledger.RefundFailed); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("FAILED from a query after SUCCESS: %v, want ErrNoChange", err)
		}
		if a, _ := s.Anomalies(ctx, "r41"); len(a) != 0 {
			t.Fatalf("anomalies = %+v, want none", a)
		}
		// WeChat Pay's own word against the ledger is still flagged.
		if _, err := move(t, s, "rf-41", ledger.RefundClosed); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatal(err)
		}
		if a, _ := s.Anomalies(ctx, "r41"); len(a) != 1 || a[0].Kind != ledger.AnomalyStaleRefundStatus {
			t.Fatalf("anomalies = %+v, want the CLOSED flagged", a)
		}
	})
}

// TestFailedCommitReturnsNoRefund: when an update's transaction fails at
// its commit (here its context ends after the history row), ApplyRefund
// returns no refund: a caller must not answer with a state the ledger
// does not hold (a refund "refused" that is still reserved and pending).
func TestFailedCommitReturnsNoRefund(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		paidOrder(t, s, "rc1", 100)
		if _, err := s.CreateRefund(context.Background(), refundReq("rc1", "rf-commit", 40)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err := s.DB().Callback().Create().After("gorm:create").Register("test:cancel_after_history", func(db *gorm.DB) {
			if db.Statement.Table == "state_history" {
				cancel()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-commit", State: ledger.RefundFailed, Source: ledger.SourceAPI})
		if err == nil || out != nil {
			t.Fatalf("ApplyRefund with a failed commit = %+v, %v; want no refund and an error", out, err)
		}
		r, err := s.Refund(context.Background(), "rf-commit")
		if err != nil || r.State != ledger.RefundCreated || refundedTotal(t, s, "rc1") != 40 {
			t.Fatalf("ledger after the failed commit: %+v, %v", r, err)
		}
	})
}

// TestLateSuccessOfAFailedRefund: FAILED is the gateway's own conclusion;
// when WeChat Pay later says it paid the refund, the money left: it is
// recorded SUCCESS, its amount counted against the order again, its stock
// release queued and the case flagged for finance. If the amount no longer
// fits (another refund took it meanwhile) nothing moves and it is flagged.
func TestLateSuccessOfAFailedRefund(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "late1", 100)
		for _, no := range []string{"rf-late", "rf-late-2"} {
			if _, err := s.CreateRefund(ctx, refundReq("late1", no, 40)); err != nil {
				t.Fatal(err)
			}
			if _, err := move(t, s, no, ledger.RefundFailed); err != nil {
				t.Fatal(err)
			}
		}
		if got := refundedTotal(t, s, "late1"); got != 0 {
			t.Fatalf("refunded_total after two failures = %d", got)
		}
		r, err := move(t, s, "rf-late", ledger.RefundSuccess)
		if err != nil || r.State != ledger.RefundSuccess || refundedTotal(t, s, "late1") != 40 {
			t.Fatalf("late SUCCESS: %+v, %v, refunded %d; want SUCCESS and 40", r, err, refundedTotal(t, s, "late1"))
		}
		jobs, err := s.Outbox().JobsOf(ctx, "late1")
		if err != nil || !hasJob(jobs, "release:rf-late") {
			t.Fatalf("jobs of late1: %+v, %v; want the release of rf-late", jobs, err)
		}
		// Another refund takes what is left; the second late SUCCESS no longer fits.
		if _, err := s.CreateRefund(ctx, refundReq("late1", "rf-other", 60)); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-late-2", ledger.RefundSuccess); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("late SUCCESS past the order: err = %v, want ErrNoChange", err)
		}
		if r, _ := s.Refund(ctx, "rf-late-2"); r.State != ledger.RefundFailed || refundedTotal(t, s, "late1") != 100 {
			t.Fatalf("rf-late-2 = %+v, refunded %d; want FAILED and 100", r, refundedTotal(t, s, "late1"))
		}
		kinds := map[string]int{}
		anomalies, _ := s.Anomalies(ctx, "late1")
		for _, a := range anomalies {
			kinds[a.Kind]++
		}
		if kinds[ledger.AnomalyLateRefundSuccess] != 1 || kinds[ledger.AnomalyStaleRefundStatus] != 1 {
			t.Fatalf("anomalies = %+v", anomalies)
		}
		// It stays on the janitor's list; once the other refund gives the
		// amount back (WeChat Pay refused it, having paid rf-late-2), the
		// next answer records the SUCCESS and queues its stock release.
		later := s.Now().Add(11 * time.Minute)
		due, err := s.WithClock(func() time.Time { return later }).ClaimStuckRefunds(ctx, later, 10, time.Minute)
		if err != nil || len(due) != 2 || due[0].OutRefundNo+due[1].OutRefundNo != "rf-otherrf-late-2" && due[0].OutRefundNo+due[1].OutRefundNo != "rf-late-2rf-other" {
			t.Fatalf("janitor's list = %+v, %v; want rf-late-2 (waiting for room) and rf-other (CREATED)", due, err)
		}
		if _, err := move(t, s, "rf-other", ledger.RefundFailed); err != nil {
			t.Fatal(err)
		}
		if r, err := move(t, s, "rf-late-2", ledger.RefundSuccess); err != nil || r.State != ledger.RefundSuccess ||
			r.NextCheckAt != nil || refundedTotal(t, s, "late1") != 80 {
			t.Fatalf("late SUCCESS with room again: %+v, %v, refunded %d; want SUCCESS, off the list, 80", r, err, refundedTotal(t, s, "late1"))
		}
		if jobs, _ := s.Outbox().JobsOf(ctx, "late1"); !hasJob(jobs, "release:rf-late-2") {
			t.Fatalf("jobs of late1: %+v; want the release of rf-late-2", jobs)
		}
	})
}

// TestRolledBackNoticeIsNoVerdict: a notice whose transaction rolled back
// is not stored, and its error must not read as ErrNotFound or
// ErrNoChange, the verdicts on a stored notice that the handler answers
// 2xx (WeChat Pay would not deliver it again). Here the payment row of a
// FAILED refund is gone when its late SUCCESS arrives.
func TestRolledBackNoticeIsNoVerdict(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "gone1", 100)
		if _, err := s.CreateRefund(ctx, refundReq("gone1", "rf-gone", 40)); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-gone", ledger.RefundFailed); err != nil {
			t.Fatal(err)
		}
		if err := s.DB().Exec("DELETE FROM payments WHERE out_trade_no = ?", "gone1").Error; err != nil {
			t.Fatal(err)
		}
		_, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-gone", State: ledger.RefundSuccess, Amount: 40,
			Source: ledger.SourceCallback, Notice: &ledger.Notice{NotifyID: "rn-gone", Source: ledger.SourceCallback,
				EventType: "REFUND.SUCCESS", OutTradeNo: "gone1", OutRefundNo: "rf-gone", Plaintext: "{}"}})
		if err == nil || errors.Is(err, ledger.ErrNotFound) || errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("err = %v, want a failure that is no verdict", err)
		}
		if notices, err := s.Notices(ctx, "gone1"); err != nil || len(notices) != 1 {
			t.Fatalf("notices of gone1: %d (%v), want only the payment's", len(notices), err)
		}
	})
}

// TestLateSuccessWaitEndsWhenWeChatClosesIt: a FAILED refund kept on the
// janitor's list for a late SUCCESS leaves it when WeChat Pay answers
// CLOSED (the money went back), and stays on it for PROCESSING.
func TestLateSuccessWaitEndsWhenWeChatClosesIt(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		failedThenTaken(t, s, "late2", "rf-w1", "rf-w2")
		if _, err := move(t, s, "rf-w1", ledger.RefundSuccess); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("late SUCCESS without room: %v, want ErrNoChange", err)
		}
		if _, err := move(t, s, "rf-w1", ledger.RefundProcessing); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatal(err)
		}
		if r, _ := s.Refund(ctx, "rf-w1"); r.NextCheckAt == nil {
			t.Fatal("PROCESSING took the refund off the janitor's list")
		}
		if _, err := move(t, s, "rf-w1", ledger.RefundClosed); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatal(err)
		}
		if r, _ := s.Refund(ctx, "rf-w1"); r.State != ledger.RefundFailed || r.NextCheckAt != nil {
			t.Fatalf("after CLOSED: %+v, want FAILED and off the list", r)
		}
	})
}

// TestAbnormalAfterFailedCountsAgain: WeChat Pay saying ABNORMAL (it
// holds the refund, and may yet pay it) for a refund the ledger failed and
// gave back is recorded, FAILED → ABNORMAL in the history, with its amount
// counted again, so no other refund can take it meanwhile; it is flagged
// (its user was told it failed) and polled. CLOSED then gives it back.
func TestAbnormalAfterFailedCountsAgain(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "held", 100)
		if _, err := s.CreateRefund(ctx, refundReq("held", "rf-h", 60)); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-h", ledger.RefundFailed); err != nil {
			t.Fatal(err)
		}
		u := ledger.RefundUpdate{OutRefundNo: "rf-h", State: ledger.RefundAbnormal, Source: ledger.SourceCallback}
		if _, err := s.ApplyRefund(ctx, u); err != nil {
			t.Fatalf("ABNORMAL after FAILED: %v", err)
		}
		r, _ := s.Refund(ctx, "rf-h")
		a, err := s.Anomalies(ctx, "held")
		if r.State != ledger.RefundAbnormal || r.NextCheckAt == nil || err != nil || len(a) != 1 ||
			a[0].Kind != ledger.AnomalyStaleRefundStatus || refundedTotal(t, s, "held") != 60 {
			t.Fatalf("refund %+v, anomalies %+v (%v), refunded %d; want ABNORMAL polled, one flag, 60 counted",
				r, a, err, refundedTotal(t, s, "held"))
		}
		var exceeds *ledger.RefundExceedsError
		if _, err := s.CreateRefund(ctx, refundReq("held", "rf-h2", 60)); !errors.As(err, &exceeds) {
			t.Fatalf("a refund into the held amount: %v, want RefundExceedsError", err)
		}
		if _, err := move(t, s, "rf-h", ledger.RefundClosed); err != nil || refundedTotal(t, s, "held") != 0 {
			t.Fatalf("CLOSED after it: %v, refunded %d; want 0 (given back)", err, refundedTotal(t, s, "held"))
		}
		if got := refundPath(t, s, "held", "rf-h"); got != "CREATED FAILED ABNORMAL CLOSED" {
			t.Fatalf("history of rf-h: %s", got)
		}
	})
}

// TestPaidAfterHeldAfterFailedIsFlaggedLate: a refund the ledger FAILED
// (its user answered 422) that WeChat Pay then holds (ABNORMAL, counted
// again) and later pays has left the money after its user was told it
// failed: its SUCCESS is flagged LATE_REFUND_SUCCESS, as a FAILED →
// SUCCESS is. A refund never FAILED is not.
func TestPaidAfterHeldAfterFailedIsFlaggedLate(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "held3", 100)
		for _, no := range []string{"rf-late3", "rf-plain3"} {
			if _, err := s.CreateRefund(ctx, refundReq("held3", no, 40)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := move(t, s, "rf-late3", ledger.RefundFailed); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"rf-late3", "rf-plain3"} {
			for _, st := range []ledger.RefundState{ledger.RefundAbnormal, ledger.RefundSuccess} {
				if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: no, State: st, Source: ledger.SourceCallback}); err != nil {
					t.Fatalf("%s → %s: %v", no, st, err)
				}
			}
		}
		late := 0
		as, _ := s.Anomalies(ctx, "held3")
		for _, a := range as {
			if a.Kind == ledger.AnomalyLateRefundSuccess {
				late++
				if a.Ref != "rf-late3" {
					t.Fatalf("late flag for %s, want rf-late3 only", a.Ref)
				}
			}
		}
		if late != 1 || refundedTotal(t, s, "held3") != 80 {
			t.Fatalf("anomalies %+v, refunded %d; want one LATE_REFUND_SUCCESS (rf-late3) and 80 counted", as, refundedTotal(t, s, "held3"))
		}
	})
}

// TestHeldAfterFailedWithoutRoomIsWatched: when another refund took the
// amount a FAILED refund gave back, WeChat Pay's ABNORMAL for it cannot be
// counted: it is flagged and stays FAILED on the janitor's list; once the
// other refund gives the amount back, the next answer is recorded, and a
// SUCCESS after it keeps the amount counted.
func TestHeldAfterFailedWithoutRoomIsWatched(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		failedThenTaken(t, s, "held2", "rf-a", "rf-b")
		u := ledger.RefundUpdate{OutRefundNo: "rf-a", State: ledger.RefundAbnormal, Source: ledger.SourceCallback}
		if _, err := s.ApplyRefund(ctx, u); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("ABNORMAL without room: %v, want ErrNoChange", err)
		}
		r, _ := s.Refund(ctx, "rf-a")
		a, err := s.Anomalies(ctx, "held2")
		if r.State != ledger.RefundFailed || r.NextCheckAt == nil || err != nil || len(a) != 1 || refundedTotal(t, s, "held2") != 60 {
			t.Fatalf("refund %+v, anomalies %+v (%v); want FAILED on the janitor's list, one flag, 60 (rf-b's) counted", r, a, err)
		}
		if _, err := move(t, s, "rf-b", ledger.RefundFailed); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-a", ledger.RefundAbnormal); err != nil {
			t.Fatalf("ABNORMAL with room again: %v", err)
		}
		if _, err := move(t, s, "rf-a", ledger.RefundSuccess); err != nil {
			t.Fatal(err)
		}
		if r, _ := s.Refund(ctx, "rf-a"); r.State != ledger.RefundSuccess || r.NextCheckAt != nil || refundedTotal(t, s, "held2") != 60 {
			t.Fatalf("after SUCCESS: %+v, refunded %d; want SUCCESS off the list, 60 counted", r, refundedTotal(t, s, "held2"))
		}
	})
}

// refundPath is the states refundNo went through, from its history.
func refundPath(t *testing.T, s *ledger.Store, no, refundNo string) string {
	t.Helper()
	hist, err := s.History(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, h := range hist {
		if h.EntityKey == refundNo {
			states = append(states, h.To)
		}
	}
	return strings.Join(states, " ")
}

func hasJob(jobs []ledger.OutboxJob, key string) bool {
	for _, j := range jobs {
		if j.Key == key {
			return true
		}
	}
	return false
}

// TestApplyRefundStoresTheAnswerWithTheState: a request's final answer is
// stored under its key in the transaction that records the refund's new
// state; when that transaction does not commit, neither is stored.
func TestApplyRefundStoresTheAnswerWithTheState(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "r11", 100)
		answer := func(key string) *ledger.IdemAnswer {
			return &ledger.IdemAnswer{Scope: "openid-1", Key: key, Hash: "h", Render: func(r *ledger.Refund) (int, []byte) {
				return 201, []byte(r.OutRefundNo + " " + string(r.State))
			}}
		}
		refundWithKey(t, s, "r11", "k11", "rf-k11")
		a := answer("k11")
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-k11", State: ledger.RefundProcessing,
			Source: ledger.SourceAPI, Answer: a}); err != nil {
			t.Fatal(err)
		}
		if !a.Stored || a.Status != 201 || string(a.Body) != "rf-k11 PROCESSING" {
			t.Fatalf("answer %+v, want stored: 201 rf-k11 PROCESSING", a)
		}
		k, run, err := s.BeginIdempotent(ctx, "openid-1", "k11", "h", time.Minute, 24*time.Hour)
		if err != nil || run || k.StatusCode != 201 || string(k.ResponseBody) != "rf-k11 PROCESSING" {
			t.Fatalf("key after the update: %+v run=%v err=%v; want done with the answer", k, run, err)
		}

		refundWithKey(t, s, "r11", "k12", "rf-k12")
		a = answer("k12")
		var mm *ledger.AmountMismatchError
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-k12", State: ledger.RefundProcessing,
			Amount: 99, Source: ledger.SourceAPI, Answer: a}); !errors.As(err, &mm) || a.Stored {
			t.Fatalf("a mismatching update: err = %v, answer %+v; want AmountMismatchError, nothing stored", err, a)
		}
		err = s.DB().Callback().Update().After("gorm:update").Register("test:fail_answer", func(db *gorm.DB) {
			if db.Statement.Table == "idempotency_keys" {
				db.AddError(errors.New("injected: answer not stored"))
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-k12", State: ledger.RefundProcessing,
			Source: ledger.SourceAPI, Answer: a}); err == nil || a.Stored {
			t.Fatalf("an update whose answer fails: err = %v, answer %+v; want an error, nothing stored", err, a)
		}
		if r, err := s.Refund(ctx, "rf-k12"); err != nil || r.State != ledger.RefundCreated {
			t.Fatalf("refund after its answer failed: %+v, %v; want still CREATED (one transaction)", r, err)
		}
		if _, _, err := s.BeginIdempotent(ctx, "openid-1", "k12", "h", time.Minute, 24*time.Hour); !errors.Is(err, ledger.ErrInFlight) {
			t.Fatalf("key after the failed update: err = %v, want still in flight", err)
		}
	})
}

// createUnderKey creates refund refundNo of amount fen on order no as the
// holder of key (hash "h") does, the key already begun.
func createUnderKey(t *testing.T, s *ledger.Store, no, key, refundNo string, amount int64) {
	t.Helper()
	req := refundReq(no, refundNo, amount)
	req.IdemScope, req.IdemKey, req.IdemHash = "openid-1", key, "h"
	if _, err := s.CreateRefund(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

// refundWithKey creates refund refundNo of 10 fen on order no under key
// (hash "h"), as a request holding the key does.
func refundWithKey(t *testing.T, s *ledger.Store, no, key, refundNo string) {
	t.Helper()
	ctx := context.Background()
	if _, run, err := s.BeginIdempotent(ctx, "openid-1", key, "h", time.Minute, 24*time.Hour); err != nil || !run {
		t.Fatalf("key %s: run=%v err=%v", key, run, err)
	}
	createUnderKey(t, s, no, key, refundNo, 10)
}

// TestUnknownRefundFlaggedPerStatus: a notice for a refund the ledger
// never made is flagged once per status WeChat Pay reports, so a SUCCESS
// (the money gone) after an ABNORMAL a person resolved opens a new flag
// instead of counting into the resolved one.
func TestUnknownRefundFlaggedPerStatus(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "unk1", 100)
		report := func(id string, state ledger.RefundState) {
			t.Helper()
			_, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-unk", State: state, Amount: 40,
				Source: ledger.SourceCallback, Notice: &ledger.Notice{NotifyID: id, Source: ledger.SourceCallback,
					EventType: "REFUND." + string(state), OutTradeNo: "unk1", OutRefundNo: "rf-unk", Plaintext: "{}"}})
			if !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("%s: err = %v, want ErrNotFound (stored, flagged)", state, err)
			}
		}
		flagsOf := func() []ledger.AnomalyListItem {
			t.Helper()
			var out []ledger.AnomalyListItem
			err := s.EachAnomaly(ctx, ledger.ListQuery{Limit: 100}, func(a ledger.AnomalyListItem) error {
				if a.OutTradeNo == "unk1" {
					out = append(out, a)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		report("rn-unk-1", ledger.RefundAbnormal)
		flags := flagsOf()
		if len(flags) != 1 {
			t.Fatalf("anomalies = %+v; want one", flags)
		}
		if _, err := s.ResolveAnomaly(ctx, flags[0].ID, "finance", "handled by hand"); err != nil {
			t.Fatal(err)
		}
		report("rn-unk-2", ledger.RefundSuccess)
		flags = flagsOf()
		open := 0
		for _, f := range flags {
			// The SUCCESS also holds the paid order's pending confirmation
			// (REFUNDED_OUTSIDE, see holdRefundedAfter): count the refund's own.
			if f.ResolvedAt == nil && f.Kind == ledger.AnomalyUnknownRefund {
				open++
				if !strings.Contains(f.Detail, "SUCCESS") {
					t.Errorf("open flag %q does not name SUCCESS", f.Detail)
				}
			}
		}
		if open != 1 {
			t.Fatalf("anomalies = %+v: want the SUCCESS one open", flags)
		}
	})
}

// failedThenTaken pays order no 100 fen and makes refund failed of 60 fen,
// FAILED (given back), then refund taker of 60 fen, which takes the amount.
func failedThenTaken(t *testing.T, s *ledger.Store, no, failed, taker string) {
	t.Helper()
	ctx := context.Background()
	paidOrder(t, s, no, 100)
	if _, err := s.CreateRefund(ctx, refundReq(no, failed, 60)); err != nil {
		t.Fatal(err)
	}
	if _, err := move(t, s, failed, ledger.RefundFailed); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRefund(ctx, refundReq(no, taker, 60)); err != nil {
		t.Fatal(err)
	}
}

// dueRefund pays order no 100 fen and makes refund refundNo of 10 fen, due
// for the janitor a second ago.
func dueRefund(t *testing.T, s *ledger.Store, no, refundNo string) {
	t.Helper()
	paidOrder(t, s, no, 100)
	req := refundReq(no, refundNo, 10)
	req.CheckAt = time.Now().Add(-time.Second)
	if _, err := s.CreateRefund(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

// TestRefundLastErrorNotUTF8IsStored: a refund's last_error holds the
// text of whatever failed, which may quote bytes that are not UTF-8 (the
// SDK's "validate verify fail serial=[…] request-id=[…]" quotes an
// answer's headers as they came). SQLite stores them; MySQL's strict
// utf8mb4 refused the whole update, so the refund's UNKNOWN or FAILED was
// never recorded. The text is stored with U+FFFD in their place, cut to
// the column.
func TestRefundLastErrorNotUTF8IsStored(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "order-bytes", 100)
		if _, err := s.CreateRefund(ctx, refundReq("order-bytes", "r-bytes", 50)); err != nil {
			t.Fatal(err)
		}
		msg := "validate verify fail serial=[\xff\xfe] request-id=[x] " + strings.Repeat("é", 300)
		for _, to := range []ledger.RefundState{ledger.RefundUnknown, ledger.RefundUnknown, ledger.RefundFailed} {
			r, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "r-bytes", State: to,
				Source: ledger.SourceAPI, LastError: msg})
			if err != nil && !errors.Is(err, ledger.ErrAlreadyRecorded) {
				t.Fatalf("apply %s: %v", to, err)
			}
			if r == nil || r.State != to {
				t.Fatalf("refund after %s: %+v", to, r)
			}
		}
		r, err := s.Refund(ctx, "r-bytes")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(r.LastError, "validate verify fail serial=[\uFFFD]") || len(r.LastError) > 512 {
			t.Fatalf("last_error = %q (%d bytes)", r.LastError, len(r.LastError))
		}
	})
}
