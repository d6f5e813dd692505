package ledger_test

import (
	"context"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestMidnightBelongsToTheDayItStarts: WeChat Pay's business day runs from
// 00:00:00 (UTC+8) up to, not including, the next midnight. A payment paid
// and a refund accepted and settled at midnight exactly are the next day's,
// as in WeChat Pay's bills: the day before has no settlements (its "no
// bill" is a quiet day, not a bill not out yet), reconciles without them
// and leaves them out of its totals; the day they start holds them. Counted
// on both days, they would be reported missing from one day's bill and
// counted twice in finance's totals.
func TestMidnightBelongsToTheDayItStarts(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		midnight := time.Date(2026, 11, 24, 0, 0, 0, 0, ledger.BusinessDay)
		early := paid("n-mid-early", "mid-early", "tx-mid-early", 1000)
		early.SuccessTime = time.Date(2026, 11, 22, 12, 0, 0, 0, ledger.BusinessDay)
		atMidnight := paid("n-mid-pay", "mid-pay", "tx-mid-pay", 500)
		atMidnight.SuccessTime = midnight
		for _, u := range []ledger.TransactionUpdate{early, atMidnight} {
			if _, err := s.ApplyTransaction(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.CreateRefund(ctx, refundReq("mid-early", "rf-mid", 100)); err != nil {
			t.Fatal(err)
		}
		if err := s.DB().Exec("UPDATE refunds SET created_at = ? WHERE out_refund_no = 'rf-mid'", midnight.Add(-100*time.Millisecond).UTC()).Error; err != nil {
			t.Fatal(err)
		}
		for _, u := range []ledger.RefundUpdate{
			{OutRefundNo: "rf-mid", State: ledger.RefundProcessing, AcceptTime: midnight, Source: ledger.SourceQuery},
			{OutRefundNo: "rf-mid", State: ledger.RefundSuccess, SuccessTime: midnight, Source: ledger.SourceCallback},
		} {
			if _, err := s.ApplyRefund(ctx, u); err != nil {
				t.Fatal(err)
			}
		}

		for day, want := range map[string]bool{"2026-11-22": true, "2026-11-23": false} {
			if settled, err := s.HasSettlements(ctx, day); err != nil || settled != want {
				t.Fatalf("HasSettlements(%s) = %v, %v; want %v (a payment on the 22nd, midnight is the 24th's)", day, settled, err, want)
			}
		}
		before := reconcileOn(t, s, "2026-11-23", &ledger.Bill{})
		if before.Status != ledger.ReconcileMatched || before.LedgerPayments != 0 || before.LedgerRefunds != 0 || len(before.Items) != 0 {
			t.Fatalf("the day before midnight: %+v", before)
		}
		bp := billPayment("mid-pay", "tx-mid-pay", 500)
		bp.Time = midnight.UTC()
		refund := ledger.BillRefund{Time: midnight.UTC(), OutTradeNo: "mid-early", OutRefundNo: "rf-mid", Status: "SUCCESS", Amount: 100}
		after := reconcileOn(t, s, "2026-11-24", &ledger.Bill{Payments: []ledger.BillPayment{bp}, Refunds: []ledger.BillRefund{refund}})
		if after.Status != ledger.ReconcileMatched || after.LedgerPayments != 1 || after.LedgerRefunds != 1 || len(after.Items) != 0 {
			t.Fatalf("the day starting at midnight: %+v", after)
		}
		totals, err := s.DailyTotals(ctx, "2026-11-23", "2026-11-24")
		if err != nil || len(totals) != 2 {
			t.Fatalf("totals: %+v, %v", totals, err)
		}
		if d := totals[0]; d.PaidCount != 0 || d.RefundCount != 0 || d.Net != 0 {
			t.Fatalf("totals of the day before midnight: %+v, want nothing", d)
		}
		if d := totals[1]; d.PaidCount != 1 || d.Paid != 500 || d.RefundCount != 1 || d.Refunded != 100 || d.Net != 400 {
			t.Fatalf("totals of the day starting at midnight: %+v, want 500 paid, 100 refunded", d)
		}
	})
}
