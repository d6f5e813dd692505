package ledger_test

import (
	"context"
	"errors"
	"testing"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestClosingAnOrderNobodyKnewLeavesNoTrace guards the state machine's
// first step: WeChat Pay's word that an order the ledger never knew is
// CLOSED, REVOKED or PAYERROR (an order query, a bill) changes nothing:
// ErrNoChange, no payment, no notice, no history. Let through, the update
// took the path of a first payment and recorded the order as paid, its
// stock confirmed, for money that never came.
func TestClosingAnOrderNobodyKnewLeavesNoTrace(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for _, state := range []string{"CLOSED", "REVOKED", "PAYERROR"} {
			u := paid("uc-"+state, "uc-"+state, "", 100)
			u.TradeState = state
			if _, err := s.ApplyTransaction(ctx, u); !errors.Is(err, ledger.ErrNoChange) {
				t.Errorf("%s of an unknown order: %v, want ErrNoChange", state, err)
			}
			if _, err := s.Payment(ctx, u.OutTradeNo); !errors.Is(err, ledger.ErrNotFound) {
				t.Errorf("%s of an unknown order left a payment (%v)", state, err)
			}
			assertCounts(t, s, u.OutTradeNo, 0, 0)
		}
	})
}
