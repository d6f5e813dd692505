package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestAnOrderIsNotClosedBeforeItExpires: CloseExpired closes an order only
// once its expire_at has passed, on the ledger's clock; before, it answers
// ErrNoChange and writes nothing. Closed early, an order the payer is
// still paying would be closed in the ledger, its stock released, and
// its payment then arrive for a closed order.
func TestAnOrderIsNotClosedBeforeItExpires(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		at := func(d time.Duration) *ledger.Store { return s.WithClock(func() time.Time { return t0.Add(d) }) }
		if _, err := at(0).RegisterOrder(ctx, ledger.Order{OutTradeNo: "early-1", AmountTotal: 100, ExpireAt: t0.Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if p, err := at(time.Hour).CloseExpired(ctx, "early-1", ledger.SourceQuery, "query:NOTPAY"); !errors.Is(err, ledger.ErrNoChange) ||
			p.State != ledger.PaymentExpected {
			t.Fatalf("close an hour before expire_at: %+v, %v; want it EXPECTED with ErrNoChange", p, err)
		}
		if p, err := at(2*time.Hour).CloseExpired(ctx, "early-1", ledger.SourceQuery, "query:NOTPAY"); err != nil || p.State != ledger.PaymentClosed {
			t.Fatalf("close at expire_at: %+v, %v; want it CLOSED", p, err)
		}
	})
}
