package ledger_test

import (
	"context"
	"testing"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestRefundedInFull: only refunds that succeeded count, summed over the
// order's refunds; one still under way may yet fail.
func TestRefundedInFull(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		check := func(no string, want bool) {
			t.Helper()
			got, err := s.RefundedInFull(ctx, no)
			if err != nil || got != want {
				t.Fatalf("RefundedInFull(%s) = %v, %v; want %v", no, got, err, want)
			}
		}
		paidOrder(t, s, "rif-1", 100)
		check("rif-1", false)
		check("rif-unknown", false)
		for _, r := range []struct {
			no     string
			amount int64
			to     []ledger.RefundState
		}{{"rif-r1", 60, []ledger.RefundState{ledger.RefundProcessing, ledger.RefundSuccess}},
			{"rif-r2", 40, []ledger.RefundState{ledger.RefundProcessing}}} {
			if _, err := s.CreateRefund(ctx, refundReq("rif-1", r.no, r.amount)); err != nil {
				t.Fatal(err)
			}
			for _, to := range r.to {
				if _, err := move(t, s, r.no, to); err != nil {
					t.Fatal(err)
				}
			}
		}
		check("rif-1", false) // 60 done, 40 under way: all reserved, not all back
		if _, err := move(t, s, "rif-r2", ledger.RefundSuccess); err != nil {
			t.Fatal(err)
		}
		check("rif-1", true)
	})
}
