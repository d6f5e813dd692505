package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestNoticeOfAnotherMerchantLeavesNoTrace: a notification validly signed
// and sealed (WeChat Pay's key, our APIv3 key) is still refused 400 when
// its resource is not for this merchant: a payment without an appid
// (this gateway is configured with one: a payment of another app, or of
// a merchant-wide product), and a refund notice for another mchid. Neither
// leaves a trace, and the refund notice of another merchant does not
// touch our paid order of the same out_trade_no. The same notices for
// this merchant are accepted (the refusal is the merchant check's).
func TestNoticeOfAnotherMerchantLeavesNoTrace(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		e := newRFEdge(t, keys, s, 1)
		pay := func(no, appID string) wxpaysim.Notification {
			n, err := keys.PaymentNotification(wxpaysim.Transaction{AppID: appID, MchID: keys.MchID, OutTradeNo: no,
				TransactionID: "42000" + no, TradeType: "JSAPI", TradeState: "SUCCESS", BankType: "OTHERS",
				SuccessTime: "2025-01-15T10:00:00+08:00", Payer: &wxpaysim.Payer{OpenID: "o-" + no},
				Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100, Currency: "CNY", PayerCurrency: "CNY"}},
				wxpaysim.PublicKeyMode(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		refund := func(no, mchID string) wxpaysim.Notification {
			n, err := keys.RefundNotification(wxpaysim.RefundNotice{MchID: mchID, OutTradeNo: no, TransactionID: "42000" + no,
				OutRefundNo: "r-" + no, RefundID: "50300" + no, RefundStatus: "SUCCESS", SuccessTime: "2025-01-15T11:00:00+08:00",
				Amount: wxpaysim.RefundNoticeAmount{Total: 100, Refund: 100, PayerTotal: 100, PayerRefund: 100}},
				wxpaysim.PublicKeyMode(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		const none = "payment none, 0 notices, jobs [], anomalies []"

		if code := e.post(t, "payment", pay("mn-noappid", "")); code != http.StatusBadRequest {
			t.Errorf("payment without appid answered %d, want 400", code)
		}
		if got := rfLedger(t, s, "mn-noappid"); got != none {
			t.Errorf("payment without appid left %s", got)
		}

		// Our paid order, then another merchant's refund of the same
		// out_trade_no: refused, and our order is left as it was.
		if code := e.post(t, "payment", pay("mn-paid", keys.AppID)); code != http.StatusNoContent {
			t.Fatalf("our payment answered %d, want 204", code)
		}
		if got := rfLedger(t, s, "mn-paid"); got != rfShipped() {
			t.Fatalf("our payment: %s, want %s", got, rfShipped())
		}
		if code := e.post(t, "refund", refund("mn-paid", "1900009999")); code != http.StatusBadRequest {
			t.Errorf("refund notice of another mchid answered %d, want 400", code)
		}
		if got := rfLedger(t, s, "mn-paid"); got != rfShipped() {
			t.Errorf("after another merchant's refund notice: %s, want %s", got, rfShipped())
		}
		if code := e.post(t, "refund", refund("mn-none", "1900009999")); code != http.StatusBadRequest {
			t.Errorf("refund notice of another mchid answered %d, want 400", code)
		}
		if got := rfLedger(t, s, "mn-none"); got != none {
			t.Errorf("another merchant's refund notice left %s", got)
		}

		// The control: the same refund notice for this merchant is taken.
		if code := e.post(t, "refund", refund("mn-paid", keys.MchID)); code != http.StatusNoContent {
			t.Errorf("our refund notice answered %d, want 204", code)
		}
		if got := rfLedger(t, s, "mn-paid"); got == rfShipped() {
			t.Errorf("our refund notice changed nothing: %s", got)
		}
	})
}
