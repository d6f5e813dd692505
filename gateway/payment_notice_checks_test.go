package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// noTrace is what rfLedger says of an order the ledger never heard of.
const noTrace = "payment none, 0 notices, jobs [], anomalies []"

// payNotice is a signed TRANSACTION.SUCCESS notice of order no, edited.
func payNotice(t *testing.T, k *wxpaysim.Keys, no string, edit func(*wxpaysim.Transaction)) wxpaysim.Notification {
	t.Helper()
	tx := wxpaysim.Transaction{AppID: k.AppID, MchID: k.MchID, OutTradeNo: no, TransactionID: "42000" + no,
		TradeType: "JSAPI", TradeState: "SUCCESS", BankType: "OTHERS", SuccessTime: "2025-01-15T10:00:00+08:00",
		Payer: &wxpaysim.Payer{OpenID: "o-" + no}, Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100,
			Currency: "CNY", PayerCurrency: "CNY"}}
	edit(&tx)
	n, err := k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPaymentNoticeWithBadIDsLeavesNoTrace guards the resource's id
// checks: a signed notice whose out_trade_no or transaction_id is longer
// than the ledger's 64 is refused 400 on every backend (MariaDB's strict
// mode refused the row: 503 at every redelivery, while SQLite stored
// it), and one without a transaction_id is refused too (a payment no
// refund or reconciliation can name). Nothing is recorded; ids of 64 are.
func TestPaymentNoticeWithBadIDsLeavesNoTrace(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		e := newRFEdge(t, keys, s, 1)
		long := strings.Repeat("n", 65)
		for _, c := range []struct {
			no   string
			edit func(*wxpaysim.Transaction)
		}{
			{long, func(tx *wxpaysim.Transaction) { tx.TransactionID = "42000-long-no" }},
			{"bid-txid", func(tx *wxpaysim.Transaction) { tx.TransactionID = strings.Repeat("4", 65) }},
			{"bid-notxid", func(tx *wxpaysim.Transaction) { tx.TransactionID = "" }},
		} {
			if code := e.post(t, "payment", payNotice(t, keys, c.no, c.edit)); code != http.StatusBadRequest {
				t.Errorf("%.12s…: answered %d, want 400", c.no, code)
			}
			if got := rfLedger(t, s, c.no); got != noTrace {
				t.Errorf("%.12s…: the ledger holds %s", c.no, got)
			}
		}
		fits := payNotice(t, keys, long[:64], func(tx *wxpaysim.Transaction) { tx.TransactionID = strings.Repeat("4", 64) })
		if code := e.post(t, "payment", fits); code != http.StatusNoContent {
			t.Errorf("ids of 64 answered %d, want 204", code)
		}
	})
}

// TestNoticeOfAnUnpaidStateChangesNothing guards the trade_state check: a
// TRANSACTION.SUCCESS notice whose resource says CLOSED (or any state but
// SUCCESS and REFUND) is refused 400 and leaves a registered order
// EXPECTED; passed on, the ledger's state machine closed the order, and
// the customer's real payment then came as a paid-after-close anomaly.
func TestNoticeOfAnUnpaidStateChangesNothing(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		e := newRFEdge(t, keys, s, 1)
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "up-reg", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		want := rfLedger(t, s, "up-reg")
		for _, state := range []string{"CLOSED", "PAYERROR", "REVOKED"} {
			n := payNotice(t, keys, "up-reg", func(tx *wxpaysim.Transaction) { tx.TradeState = state })
			if code := e.post(t, "payment", n); code != http.StatusBadRequest {
				t.Errorf("trade_state %s: answered %d, want 400", state, code)
			}
		}
		if got := rfLedger(t, s, "up-reg"); got != want {
			t.Fatalf("the registered order went from %s to %s", want, got)
		}
	})
}

// failingGate is a Gate whose replay check cannot be made (Redis down
// with no fallback).
type failingGate struct{}

func (failingGate) Admit(context.Context, gateway.GateKeys, gateway.GateTTLs) (gateway.Admission, error) {
	return gateway.Admission{}, errors.New("redis: connection refused")
}

func (failingGate) Finish(context.Context, gateway.GateKeys, string, bool, gateway.GateTTLs) error {
	return nil
}

// TestNoticeIsNotAnsweredWhenTheGateFails guards the processor's answer
// when its gate cannot check the nonce: 503, so WeChat Pay redelivers,
// and nothing recorded. A 2xx there would tell WeChat Pay a payment is
// recorded that nobody applied, and it would never be sent again.
func TestNoticeIsNotAnsweredWhenTheGateFails(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		v, err := wechatpay.NewVerifier(wechatpay.NotifyConfig{APIv3Key: keys.APIv3Key, PublicKeyID: keys.PublicKeyID,
			PublicKey: keys.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		p := gateway.NewProcessor(gateway.ProcessorConfig{MchID: keys.MchID, AppID: keys.AppID}, v, failingGate{},
			gateway.NewMemoryLocker(), s)
		t.Cleanup(func() { _ = p.Close() })
		gin.SetMode(gin.TestMode)
		e := &rfEdge{keys: keys, store: s, router: gateway.NewRouter(gateway.Deps{Processor: p, Store: s})}
		if code := e.post(t, "payment", payNotice(t, keys, "gf-1", func(*wxpaysim.Transaction) {})); code != http.StatusServiceUnavailable {
			t.Errorf("answered %d with the gate failing, want 503", code)
		}
		if got := rfLedger(t, s, "gf-1"); got != noTrace {
			t.Errorf("the ledger holds %s", got)
		}
	})
}

// TestDiscountedPaymentRecordsBothAmounts guards which amount is which: a
// registered order of 100 fen paid 80 by the customer (a coupon gave 20)
// is recorded with amount_total 100 and payer_total 80, matches its
// registration (no anomaly, its stock confirmation sent). Swapped, the
// ledger held the order paid 80 against its 100, flagged it and held its
// goods, and finance's totals and refund limits were off by the coupon.
func TestDiscountedPaymentRecordsBothAmounts(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		e := newRFEdge(t, keys, s, 1)
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "dc-1", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		n := payNotice(t, keys, "dc-1", func(tx *wxpaysim.Transaction) { tx.Amount.PayerTotal = 80 })
		if code := e.post(t, "payment", n); code != http.StatusNoContent {
			t.Fatalf("answered %d, want 204", code)
		}
		p, err := s.Payment(ctx, "dc-1")
		if err != nil || p.AmountTotal != 100 || p.PayerTotal != 80 {
			t.Fatalf("payment %+v (%v), want amount_total 100, payer_total 80", p, err)
		}
		if got := rfLedger(t, s, "dc-1"); got != rfShipped() {
			t.Fatalf("ledger %s, want %s", got, rfShipped())
		}
	})
}

// TestCallbackRecordsWhoPaidAndWhen guards what a callback's payment
// carries into the ledger: the payer's openid (WeChat Pay's signed word on
// who may ask for refunds; without it nobody may) and the success_time
// (the day whose totals and bill the payment is in), not the notice's
// create_time.
func TestCallbackRecordsWhoPaidAndWhen(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		e := newRFEdge(t, keys, s, 1)
		if code := e.post(t, "payment", payNotice(t, keys, "wp-1", func(*wxpaysim.Transaction) {})); code != http.StatusNoContent {
			t.Fatalf("answered %d, want 204", code)
		}
		p, err := s.Payment(context.Background(), "wp-1")
		if err != nil {
			t.Fatal(err)
		}
		paid := time.Date(2025, 1, 15, 2, 0, 0, 0, time.UTC)
		if p.PayerOpenID != "o-wp-1" || p.SuccessTime == nil || !p.SuccessTime.Equal(paid) {
			t.Fatalf("payer %q, success_time %v; want o-wp-1 and %v", p.PayerOpenID, p.SuccessTime, paid)
		}
	})
}
