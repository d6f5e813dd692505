package ledger_test

import (
	"context"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestRefundMismatchesAreReported: each way a day's refunds can disagree
// with the bill is reported, DEFERRED (the refund flow or a person acts,
// reconciliation changes no refund): another amount, SUCCESS in the bill
// but not in the ledger, and a refund the ledger settled that day that the
// bill lacks. A refund that agrees is not reported. Missed, the day would
// read MATCHED while the money refunded differs.
func TestRefundMismatchesAreReported(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "rm-order", 1000)
		accepted := time.Date(2026, 11, 23, 12, 0, 0, 0, ledger.BusinessDay)
		for _, r := range []struct {
			no      string
			amount  int64
			settled bool
		}{{"rm-amount", 100, true}, {"rm-state", 50, false}, {"rm-unbilled", 30, true}, {"rm-ok", 20, true}} {
			refundAcceptedAt(t, s, "rm-order", r.no, r.amount, accepted, r.settled)
		}
		bill := &ledger.Bill{Payments: []ledger.BillPayment{billPayment("rm-order", "tx-rm-order", 1000)},
			Refunds: []ledger.BillRefund{
				{OutTradeNo: "rm-order", OutRefundNo: "rm-amount", Status: "SUCCESS", Amount: 120},
				{OutTradeNo: "rm-order", OutRefundNo: "rm-state", Status: "SUCCESS", Amount: 50},
				{OutTradeNo: "rm-order", OutRefundNo: "rm-ok", Status: "SUCCESS", Amount: 20},
			}}
		rep := reconcile(t, s, bill)
		want := map[string]string{"rm-amount": ledger.MismatchRefundAmount, "rm-state": ledger.MismatchRefundState,
			"rm-unbilled": ledger.MismatchRefundMissingInBill}
		if rep.Status != ledger.ReconcileMismatched || rep.Mismatches != len(want) || rep.LedgerRefunds != 3 || rep.LedgerRefunded != 150 {
			t.Fatalf("report %+v, want MISMATCHED with %d items, 3 refunds of 150 fen in the ledger", rep, len(want))
		}
		for _, it := range rep.Items {
			if want[it.OutRefundNo] != it.Kind || it.Repair != ledger.RepairDeferred {
				t.Fatalf("item %+v, want %q DEFERRED", it, want[it.OutRefundNo])
			}
		}
		if r, err := s.Refund(ctx, "rm-state"); err != nil || r.State != ledger.RefundProcessing {
			t.Fatalf("refund rm-state: %+v, %v; want it left PROCESSING", r, err)
		}
	})
}

// TestTheFirstAcceptanceTimeStands: when WeChat Pay accepted a refund
// decides the day it is reconciled on, so the first time recorded stands: a
// later answer naming another time (a run's look-up racing the refund's
// own query) does not move the refund to another day after its day was
// reconciled.
func TestTheFirstAcceptanceTimeStands(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "fa-order", 1000)
		if _, err := s.CreateRefund(ctx, refundReq("fa-order", "rf-fa", 100)); err != nil {
			t.Fatal(err)
		}
		first := time.Date(2026, 11, 23, 23, 59, 59, 0, ledger.BusinessDay)
		for _, at := range []time.Time{first, first.Add(2 * time.Second)} {
			if err := s.NoteRefundAccepted(ctx, "rf-fa", at); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := s.Refund(ctx, "rf-fa"); err != nil || r.AcceptedAt == nil || !r.AcceptedAt.Equal(first) {
			t.Fatalf("refund %+v, %v; want it accepted at the first time noted, %v", r, err, first)
		}
	})
}

// refundAcceptedAt makes refund no of amount fen on order, which WeChat
// Pay accepted at accepted (PROCESSING) and, when settled, paid a minute
// later (SUCCESS).
func refundAcceptedAt(t *testing.T, s *ledger.Store, order, no string, amount int64, accepted time.Time, settled bool) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateRefund(ctx, refundReq(order, no, amount)); err != nil {
		t.Fatal(err)
	}
	u := ledger.RefundUpdate{OutRefundNo: no, State: ledger.RefundProcessing, AcceptTime: accepted, Source: ledger.SourceQuery}
	if _, err := s.ApplyRefund(ctx, u); err != nil {
		t.Fatal(err)
	}
	if settled {
		u.State, u.SuccessTime, u.Source = ledger.RefundSuccess, accepted.Add(time.Minute), ledger.SourceCallback
		if _, err := s.ApplyRefund(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
}
