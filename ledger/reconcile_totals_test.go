package ledger_test

import (
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestBillRefundedCountsMoneyRefunded: the report's bill_refunded, like its
// ledger_refunded, is the money refunded that day. A bill row of a refund
// still PROCESSING (or closed) is reported and checked, but moved no money:
// counted in bill_refunded, it would make a day whose refunds all agree look
// short on the ledger's side to finance.
func TestBillRefundedCountsMoneyRefunded(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		paidOrder(t, s, "tot-order", 1000)
		accepted := time.Date(2026, 11, 23, 12, 0, 0, 0, ledger.BusinessDay)
		refundAcceptedAt(t, s, "tot-order", "tot-paid", 100, accepted, true)
		refundAcceptedAt(t, s, "tot-order", "tot-pending", 50, accepted, false)
		bill := &ledger.Bill{Payments: []ledger.BillPayment{billPayment("tot-order", "tx-tot-order", 1000)},
			Refunds: []ledger.BillRefund{
				{OutTradeNo: "tot-order", OutRefundNo: "tot-paid", Status: "SUCCESS", Amount: 100},
				{OutTradeNo: "tot-order", OutRefundNo: "tot-pending", Status: "PROCESSING", Amount: 50},
			}}
		rep := reconcile(t, s, bill)
		if rep.Status != ledger.ReconcileMatched || len(rep.Items) != 0 || rep.BillRefunds != 2 {
			t.Fatalf("report %+v, want matched with both bill rows read", rep)
		}
		if rep.BillRefunded != 100 || rep.LedgerRefunded != 100 {
			t.Fatalf("bill_refunded %d, ledger_refunded %d; want 100 each (the PROCESSING row moved no money)",
				rep.BillRefunded, rep.LedgerRefunded)
		}
	})
}
