package compensate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// answer answers every query with tx, about the order asked.
type answer struct{ tx wechatpay.Transaction }

func (a *answer) QueryOrder(_ context.Context, no string) (*wechatpay.Transaction, error) {
	tx := a.tx
	tx.OutTradeNo = no
	return &tx, nil
}

func (a *answer) CloseOrder(context.Context, string) error { return nil }

// TestAPaidAnswerWithoutTransactionOrAmountRecordsNothing: an answer
// saying SUCCESS but naming no transaction, or no amount, is not WeChat
// Pay's account of a payment (a callback holding it is refused too): the
// order is left as it was, the check failed, asked again next run.
// Recorded, it would be a payment without the transaction refunds go
// through, or paid 0 fen, its stock confirmed.
func TestAPaidAnswerWithoutTransactionOrAmountRecordsNothing(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		s, t0, set := onClock(base)
		for i, tx := range []wechatpay.Transaction{
			{TradeState: "SUCCESS", AmountTotal: 100, PayerTotal: 100, Currency: "CNY", SuccessTime: t0},
			{TradeState: "SUCCESS", TransactionID: "tx-no-amount", Currency: "CNY", SuccessTime: t0},
		} {
			no := fmt.Sprintf("paid-bare-%d-%d", i, t0.UnixNano())
			set(0)
			expecting(t, s, t0, no)
			var results []string
			set(2 * time.Minute)
			p := runOnce(t, testJob(s, &answer{tx: tx}, &results), s, no)
			if p.State != ledger.PaymentExpected || len(results) != 1 || results[0] != Failed {
				t.Fatalf("answer %+v: order %s, results %v; want EXPECTED, failed", tx, p.State, results)
			}
		}
	})
}
