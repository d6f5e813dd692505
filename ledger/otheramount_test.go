package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// heldAmountPrefix is how the last error of a confirmation held for an
// amount that differs from the registered one begins.
const heldAmountPrefix = "held: the order was registered for 500 fen and paid 499 fen (anomaly AMOUNT_MISMATCH)"

// registerOther registers order no for 500 fen by openid-1 and records
// WeChat Pay's payment of it for 499 fen (transaction tx-<no>).
func registerOther(t *testing.T, s *ledger.Store, no string) *ledger.Payment {
	t.Helper()
	ctx := context.Background()
	o := ledger.Order{OutTradeNo: no, AmountTotal: 500, PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}
	if _, err := s.RegisterOrder(ctx, o); err != nil {
		t.Fatalf("register %s: %v", no, err)
	}
	p, err := s.ApplyTransaction(ctx, paid("n-"+no, no, "tx-"+no, 499))
	if err != nil {
		t.Fatalf("pay %s 499 fen of 500: err = %v, want it recorded", no, err)
	}
	return p
}

// jobByKey returns the order's job under key.
func jobByKey(t *testing.T, s *ledger.Store, no, key string) ledger.OutboxJob {
	t.Helper()
	jobs, err := s.Outbox().JobsOf(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Key == key {
			return j
		}
	}
	t.Fatalf("%s has no job %s in %+v", no, key, jobs)
	return ledger.OutboxJob{}
}

// TestOtherAmountIsRecordedAndHeld: WeChat Pay signed a payment of 499
// fen for an order registered for 500. The money was paid, so the ledger
// records it (SUCCESS, the paid amount, its notice and one history row)
// and flags AMOUNT_MISMATCH; refusing it would lose it once WeChat Pay
// stops redelivering. The stock waits for a person: the confirmation is
// stored dead, held. A redelivery and the compensation query's notice
// change nothing. Refunds are bounded by what was paid; a refund's
// release is held behind the dead confirmation and cannot be replayed
// alone; replaying the confirmation puts both back in the queue, not held
// again for a refund outside the gateway, and a confirmation of an order
// refunded in full is skipped (RefundedInFull).
func TestOtherAmountIsRecordedAndHeld(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		p := registerOther(t, s, "oa-1")
		if p.State != ledger.PaymentSuccess || p.AmountTotal != 499 || p.PayerTotal != 499 || p.ExpectedAmount != 500 ||
			p.TransactionID != "tx-oa-1" || !p.Registered {
			t.Fatalf("payment = %+v, want SUCCESS, 499 paid of the registered 500", p)
		}
		for _, u := range []ledger.TransactionUpdate{paid("n-oa-1", "oa-1", "tx-oa-1", 499), paid("query:tx-oa-1", "oa-1", "tx-oa-1", 499)} {
			if _, err := s.ApplyTransaction(ctx, u); !errors.Is(err, ledger.ErrAlreadyRecorded) {
				t.Fatalf("%s again: err = %v, want ErrAlreadyRecorded", u.Notice.NotifyID, err)
			}
		}
		if again, _ := s.Payment(ctx, "oa-1"); again.Version != p.Version || again.AmountTotal != 499 {
			t.Fatalf("after the redeliveries: %+v, want %+v unchanged", again, p)
		}
		assertCounts(t, s, "oa-1", 2, 1) // the registration and the payment; its notice
		a, err := s.Anomalies(ctx, "oa-1")
		if err != nil || len(a) != 1 || a[0].Kind != ledger.AnomalyAmountMismatch || a[0].Ref != "paid:tx-oa-1" ||
			a[0].SeenCount != 1 || !strings.Contains(a[0].Detail, "registered for 500 fen, paid 499 fen") {
			t.Fatalf("anomalies = %+v, %v; want one AMOUNT_MISMATCH paid:tx-oa-1 seen once, naming both amounts", a, err)
		}
		jobs, err := s.Outbox().JobsOf(ctx, "oa-1")
		if err != nil || len(jobs) != 1 {
			t.Fatalf("jobs = %+v, %v; want the confirmation only", jobs, err)
		}
		c := jobs[0]
		var body map[string]any
		if c.Key != "confirm:oa-1" || c.State != ledger.JobDead || c.Attempts != 0 || c.MaybeSent ||
			!strings.HasPrefix(c.LastError, heldAmountPrefix) || json.Unmarshal(c.Payload, &body) != nil || body["amount_total"] != 499.0 {
			t.Fatalf("confirmation = %+v, want confirm:oa-1 DEAD, never attempted, held %q…, for 499 fen", c, heldAmountPrefix)
		}

		var exceeds *ledger.RefundExceedsError
		if _, err := s.CreateRefund(ctx, refundReq("oa-1", "rf-oa-over", 500)); !errors.As(err, &exceeds) || exceeds.Remaining != 499 {
			t.Fatalf("refund of the registered 500: err = %v, want RefundExceedsError with 499 left", err)
		}
		if _, err := s.CreateRefund(ctx, refundReq("oa-1", "rf-oa-all", 499)); err != nil {
			t.Fatalf("refund of the 499 paid: %v", err)
		}
		if r, err := move(t, s, "rf-oa-all", ledger.RefundSuccess); err != nil || r.State != ledger.RefundSuccess {
			t.Fatalf("refund SUCCESS: %+v, %v", r, err)
		}
		release := jobByKey(t, s, "oa-1", "release:rf-oa-all")
		if release.State != ledger.JobDead || !strings.Contains(release.LastError, "is dead; replay it first") {
			t.Fatalf("release = %+v, want DEAD, held behind the dead confirmation", release)
		}
		if _, err := s.Outbox().Replay(ctx, release.ID, "ops:test"); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("replay of the release alone: err = %v, want ErrConflict", err)
		}
		if full, err := s.RefundedInFull(ctx, "oa-1"); err != nil || !full {
			t.Fatalf("refunded in full = %v, %v; want true (a replayed confirmation is then skipped)", full, err)
		}

		replayed, err := s.Outbox().Replay(ctx, c.ID, "ops:test")
		if err != nil || replayed.State != ledger.JobPending {
			t.Fatalf("replay of the confirmation: %+v, %v; want PENDING", replayed, err)
		}
		if r := jobByKey(t, s, "oa-1", "release:rf-oa-all"); r.State != ledger.JobPending {
			t.Fatalf("release after the confirmation's replay = %+v, want PENDING behind it", r)
		}
		if outside, err := s.RefundedOutside(ctx, "oa-1", c.ID); err != nil || outside {
			t.Fatalf("refunded outside = %v, %v; want false: the replayed confirmation is not held again", outside, err)
		}
	})
}

// TestOtherAmountInBatchIsRecordedAndHeld: the group-commit path records
// such a payment as the single path does (through its fallback), with the
// plain updates of the batch applied too.
func TestOtherAmountInBatchIsRecordedAndHeld(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		o := ledger.Order{OutTradeNo: "ob-mm", AmountTotal: 500, PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		us := []ledger.TransactionUpdate{paid("bn-mm", "ob-mm", "btx-mm", 499), paid("bn-a", "ob-a", "btx-a", 100)}
		errs, _ := s.ApplyTransactions(ctx, us)
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("batch: %v", errs)
		}
		assertPaid(t, s, "ob-a", 100, 1)
		if j := jobByKey(t, s, "ob-a", "confirm:ob-a"); j.State != ledger.JobPending {
			t.Fatalf("plain confirmation = %+v, want PENDING", j)
		}
		assertPaid(t, s, "ob-mm", 499, 2)
		if j := jobByKey(t, s, "ob-mm", "confirm:ob-mm"); j.State != ledger.JobDead || !strings.HasPrefix(j.LastError, heldAmountPrefix) {
			t.Fatalf("confirmation = %+v, want DEAD, held %q…", j, heldAmountPrefix)
		}
		if a, _ := s.Anomalies(ctx, "ob-mm"); len(a) != 1 || a[0].Kind != ledger.AnomalyAmountMismatch || a[0].Ref != "paid:btx-mm" {
			t.Fatalf("anomalies = %+v, want one AMOUNT_MISMATCH", a)
		}
	})
}

// TestOtherAmountRefundedOutsideIsHeldForBoth: an order paid another
// amount and refunded outside the gateway, in either order, has its
// confirmation held for the refund outside (which a send reads, see
// RefundedOutside) naming the amount too, and both flags.
func TestOtherAmountRefundedOutsideIsHeldForBoth(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		// The refund notice after the payment: the confirmation is held
		// already (for the amount), and is held for the refund too.
		registerOther(t, s, "oh-after")
		refund := rfRefundNotice("oh-after", "out-oh-after", ledger.RefundSuccess)
		refund.Amount = 499
		reportRefundFirst(t, s, refund)
		// The refund notice first.
		o := ledger.Order{OutTradeNo: "oh-first", AmountTotal: 500, PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		first := rfRefundNotice("oh-first", "out-oh-first", ledger.RefundSuccess)
		first.Amount = 499
		reportRefundFirst(t, s, first)
		if _, err := s.ApplyTransaction(ctx, paid("n-oh-first", "oh-first", "tx-oh-first", 499)); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"oh-after", "oh-first"} {
			c := orConfirmation(t, s, no)
			if c.State != ledger.JobDead || !strings.HasPrefix(c.LastError, heldOutsidePrefix) ||
				!strings.Contains(c.LastError, "registered for 500 fen and paid 499 fen") {
				t.Fatalf("%s: confirmation %+v, want DEAD, held for the refund outside, naming the amounts", no, c)
			}
			kinds := map[string]bool{}
			as, _ := s.Anomalies(ctx, no)
			for _, a := range as {
				kinds[a.Kind] = true
				if a.Kind == ledger.AnomalyRefundedOutside && strings.Contains(a.Detail, "was attempted") {
					t.Errorf("%s: REFUNDED_OUTSIDE detail %q: the confirmation was never attempted", no, a.Detail)
				}
			}
			if !kinds[ledger.AnomalyAmountMismatch] || !kinds[ledger.AnomalyRefundedOutside] || !kinds[ledger.AnomalyUnknownRefund] {
				t.Fatalf("%s: anomalies %+v, want AMOUNT_MISMATCH, REFUNDED_OUTSIDE and UNKNOWN_REFUND", no, as)
			}
			if outside, err := s.RefundedOutside(ctx, no, c.ID); err != nil || !outside {
				t.Fatalf("%s: refunded outside = %v, %v; want true", no, outside, err)
			}
		}
	})
}
