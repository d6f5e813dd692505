package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// paidUpdate is a plain TRANSACTION.SUCCESS update of order no.
func paidUpdate(no string) ledger.TransactionUpdate {
	return ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
		EventType: "TRANSACTION.SUCCESS", OutTradeNo: no, TransactionID: "42" + no, Plaintext: "{}"},
		OutTradeNo: no, TransactionID: "42" + no, TradeState: "SUCCESS", MchID: "1900000001",
		AmountTotal: 100, PayerTotal: 100, Currency: "CNY", SuccessTime: time.Now()}
}

// TestEachCallerOfABatchGetsItsOwnAnswer guards how a group commit answers
// its callers: each gets its own update's result. A batch of a plain
// notice, one the ledger refuses (paid in USD) and another plain one
// falls back to one apply each; the refused one is answered its error
// (no 2xx, for nothing was recorded) and its batch mates nil (each
// recorded). Answering all with the first's result gave the refused one
// a 2xx, and WeChat Pay never sent it again.
func TestEachCallerOfABatchGetsItsOwnAnswer(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		b := &batcher{store: s, timeout: 10 * time.Second}
		usd := paidUpdate("ba-usd")
		usd.Currency = "USD"
		us := []ledger.TransactionUpdate{paidUpdate("ba-1"), usd, paidUpdate("ba-2")}
		items := make([]*batchItem, len(us))
		for i, u := range us {
			items[i] = &batchItem{ctx: context.Background(), u: u, done: make(chan error, 1)}
		}
		b.run(items)
		var mismatch *ledger.AmountMismatchError
		for i, it := range items {
			err := <-it.done
			if refused := errors.As(err, &mismatch); refused != (i == 1) {
				t.Errorf("%s answered %v", it.u.OutTradeNo, err)
			}
		}
		for _, no := range []string{"ba-1", "ba-2"} {
			if p, err := s.Payment(context.Background(), no); err != nil || p.State != ledger.PaymentSuccess {
				t.Errorf("%s: %+v, %v; want it paid", no, p, err)
			}
		}
		if _, err := s.Payment(context.Background(), "ba-usd"); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("the USD payment was recorded (%v)", err)
		}
	})
}

// TestUpdateAfterShutdownIsNotAnswered guards the batcher's answer once
// it stopped (the server draining): an update handed over then is
// answered an error (503, WeChat Pay redelivers to another instance), not
// nil, which told WeChat Pay a payment was recorded that nobody applied.
func TestUpdateAfterShutdownIsNotAnswered(t *testing.T) {
	s := ledgertest.OpenSQLite(t)
	b := newBatcher(s, BatchPolicy{Workers: 1, Max: 4}, 10*time.Second, nil)
	b.close()
	if err := b.apply(context.Background(), paidUpdate("sd-1")); err == nil || Status(ledgerError(err)) != 503 {
		t.Fatalf("apply after close: %v, want an error answered 503", err)
	}
	if _, err := s.Payment(context.Background(), "sd-1"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("the update was recorded after close (%v)", err)
	}
}
