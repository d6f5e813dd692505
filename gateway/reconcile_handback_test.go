package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestAnEmptyLedgerRepairsNoPaymentOfTheSystemBefore: before the gateway
// took its first payment (no TakeOver set), a day run by hand whose bill
// lists payments is the system before's: every row is DEFERRED and none
// recorded. Taken as repairs, they would be recorded and their stock
// confirmed a second time.
func TestAnEmptyLedgerRepairsNoPaymentOfTheSystemBefore(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		line := func(at, tx, no string) string { return paidLine("2026-11-21 "+at, "wx1", tx, no) }
		bills := &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			return []byte(billHeader + "\r\n" + line("08:00:00", "tx-prior-a", "prior-a") + line("22:00:00", "tx-prior-b", "prior-b")), nil
		}}
		rep, err := (&Reconciler{Store: s, Bills: bills}).Run(context.Background(), "2026-11-21", "finance")
		if err != nil || rep.Mismatches != 2 || rep.Repaired != 0 {
			t.Fatalf("run: %+v, %v; want 2 mismatches, none repaired", rep, err)
		}
		for _, it := range rep.Items {
			if it.Repair != ledger.RepairDeferred {
				t.Fatalf("%s: repair %q (%s), want DEFERRED", it.OutTradeNo, it.Repair, it.RepairDetail)
			}
			if _, err := s.Payment(context.Background(), it.OutTradeNo); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("the system before's payment %s was recorded: %v", it.OutTradeNo, err)
			}
		}
	})
}

// otherRefund answers every refund query about another refund than the
// one asked about, stating when WeChat Pay accepted that one.
type otherRefund struct{ unknownRefunds }

func (o *otherRefund) QueryRefund(context.Context, string) (*WxRefund, error) {
	o.queries.Add(1)
	return &WxRefund{OutRefundNo: "RF-someone-else", Status: "SUCCESS", CreateTime: time.Date(2026, 11, 23, 0, 0, 1, 0, ledger.BusinessDay)}, nil
}

// TestAnAnswerAboutAnotherRefundDatesNone: the run asks WeChat Pay when
// it accepted the day's refunds the ledger has no acceptance time for. An
// answer about another refund says nothing of the one asked about: its
// time is not recorded, so the refund is not moved to another day's
// reconciliation (and reported missing from this day's bill).
func TestAnAnswerAboutAnotherRefundDatesNone(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 22, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		ctx := context.Background()
		paidBy(t, s, "acc-other", "o-acc")
		if _, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: "acc-other", OutRefundNo: "RFacc-other", Amount: 10,
			Requester: "o-acc", CheckAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "RFacc-other", State: ledger.RefundSuccess,
			Source: ledger.SourceCallback}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(24 * time.Hour)
		wx := &otherRefund{}
		if _, err := (&Reconciler{Store: s, Bills: &fakeBills{fn: emptyBill}, Refunds: wx}).Run(ctx, "2026-11-22", "test"); err != nil {
			t.Fatal(err)
		}
		r, err := s.Refund(ctx, "RFacc-other")
		if err != nil || wx.queries.Load() != 1 || r.AcceptedAt != nil {
			t.Fatalf("refund %+v (%v) after %d queries answered about another refund: want it asked about once, "+
				"its acceptance time still unknown", r, err, wx.queries.Load())
		}
	})
}

// TestACancelledRunHandsItsDayBack: a run whose request ends (the caller
// went away, the server shuts down) hands its lease on the day back even
// so: the day can be run again at once, not only when the lease runs out
// minutes later.
func TestACancelledRunHandsItsDayBack(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		day := ledger.DayOf(s.Now().Add(-24 * time.Hour))
		ctx, cancel := context.WithCancel(context.Background())
		r := &Reconciler{Store: s, Bills: &fakeBills{fn: func(ctx context.Context, _ string) ([]byte, error) {
			cancel()
			return nil, ctx.Err()
		}}}
		if _, err := r.Run(ctx, day, "gone"); err == nil {
			t.Fatal("a cancelled run succeeded")
		}
		claim, err := s.ClaimReconciliation(context.Background(), day, time.Minute)
		if err != nil {
			t.Fatalf("claim right after a cancelled run: %v, want the day handed back", err)
		}
		if err := s.ReleaseReconciliation(context.Background(), claim); err != nil {
			t.Fatal(err)
		}
	})
}
