package ledger_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// closeOrder registers order no for 500 fen, expiring an hour after t0,
// and closes it (the compensation found it unpaid at its expire_at).
func closeOrder(t *testing.T, s *ledger.Store, t0 time.Time, no string) {
	t.Helper()
	ctx := context.Background()
	at := func(d time.Duration) *ledger.Store { return s.WithClock(func() time.Time { return t0.Add(d) }) }
	o := ledger.Order{OutTradeNo: no, AmountTotal: 500, ExpireAt: t0.Add(time.Hour)}
	if _, err := at(0).RegisterOrder(ctx, o); err != nil {
		t.Fatalf("register %s: %v", no, err)
	}
	if p, err := at(2*time.Hour).CloseExpired(ctx, no, ledger.SourceQuery, "query:ORDER_NOT_EXIST"); err != nil || p.State != ledger.PaymentClosed {
		t.Fatalf("close %s: %+v, %v", no, p, err)
	}
}

// TestPaymentOfAClosedOrderIsFlagged: a registered order the ledger
// closed (WeChat Pay said it was unpaid, or did not know it, at its
// expire_at) and then paid anyway (a callback held up while WeChat Pay's
// queries lagged, a prepay made after the close) is recorded, CLOSED →
// SUCCESS, its stock confirmed as for any payment, but flagged
// PAID_AFTER_CLOSE once: the ledger told finance it was closed, and the
// business may have cancelled it. The group-commit path flags it too.
func TestPaymentOfAClosedOrderIsFlagged(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		t0 := time.Now().Add(-3 * time.Hour)
		closeOrder(t, s, t0, "pc-1")
		p, err := s.ApplyTransaction(ctx, paid("n-pc-1", "pc-1", "tx-pc-1", 500))
		if err != nil || p.State != ledger.PaymentSuccess || p.AmountTotal != 500 {
			t.Fatalf("payment of the closed order: %+v, %v; want it recorded SUCCESS", p, err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("query:tx-pc-1", "pc-1", "tx-pc-1", 500)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("its query answer: %v, want ErrAlreadyRecorded", err)
		}
		assertCounts(t, s, "pc-1", 3, 1) // EXPECTED, CLOSED, SUCCESS; the callback's notice
		a, err := s.Anomalies(ctx, "pc-1")
		if err != nil || len(a) != 1 || a[0].Kind != ledger.AnomalyPaidAfterClose || a[0].Ref != "closed:pc-1" || a[0].SeenCount != 1 {
			t.Fatalf("anomalies = %+v, %v; want one PAID_AFTER_CLOSE closed:pc-1", a, err)
		}
		if c := jobByKey(t, s, "pc-1", "confirm:pc-1"); c.State != ledger.JobPending {
			t.Fatalf("confirmation = %+v, want PENDING: the money was paid as registered", c)
		}

		closeOrder(t, s, t0, "pc-2")
		errs, _ := s.ApplyTransactions(ctx, []ledger.TransactionUpdate{paid("n-pc-2", "pc-2", "tx-pc-2", 500),
			paid("n-pc-3", "pc-3", "tx-pc-3", 100)})
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("batch: %v", errs)
		}
		if a, _ := s.Anomalies(ctx, "pc-2"); len(a) != 1 || a[0].Kind != ledger.AnomalyPaidAfterClose {
			t.Fatalf("batch: anomalies of pc-2 = %+v, want PAID_AFTER_CLOSE", a)
		}
		if a, _ := s.Anomalies(ctx, "pc-3"); len(a) != 0 {
			t.Fatalf("batch: a plain payment flagged %+v", a)
		}

		// Paid another amount than registered: the confirmation is held,
		// and the flag says so rather than "confirmed".
		closeOrder(t, s, t0, "pc-4")
		if _, err := s.ApplyTransaction(ctx, paid("n-pc-4", "pc-4", "tx-pc-4", 400)); err != nil {
			t.Fatal(err)
		}
		flags, _ := s.Anomalies(ctx, "pc-4")
		var detail string
		for _, f := range flags {
			if f.Kind == ledger.AnomalyPaidAfterClose {
				detail = f.Detail
			}
		}
		if len(flags) != 2 || !strings.Contains(detail, "stock confirmation held") || strings.Contains(detail, "stock confirmed") {
			t.Fatalf("paid 400 of 500 after the close: %+v; want AMOUNT_MISMATCH and a PAID_AFTER_CLOSE saying the stock is held", flags)
		}
		if c := jobByKey(t, s, "pc-4", "confirm:pc-4"); c.State != ledger.JobDead {
			t.Fatalf("confirmation = %+v, want held DEAD", c)
		}
	})
}
