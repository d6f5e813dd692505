package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestNoticeWithOverlongIDs: a signed notice whose WeChat Pay ids are
// longer than the ledger keeps (openid 128, transaction_id and refund_id
// 64) is refused 400 with a clear reason and leaves no trace, on every
// backend alike: MariaDB's strict mode refused the row (503 at every
// redelivery, read as a database fault) while SQLite stored it.
func TestNoticeWithOverlongIDs(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		e := newRFEdge(t, keys, s, 1)
		pay := func(no string, edit func(*wxpaysim.Transaction)) wxpaysim.Notification {
			tx := wxpaysim.Transaction{AppID: keys.AppID, MchID: keys.MchID, OutTradeNo: no, TransactionID: "42000" + no,
				TradeType: "JSAPI", TradeState: "SUCCESS", BankType: "OTHERS", SuccessTime: "2025-01-15T10:00:00+08:00",
				Payer: &wxpaysim.Payer{OpenID: "o-" + no}, Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100,
					Currency: "CNY", PayerCurrency: "CNY"}}
			edit(&tx)
			n, err := keys.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		refund := func(no string, edit func(*wxpaysim.RefundNotice)) wxpaysim.Notification {
			r := wxpaysim.RefundNotice{MchID: keys.MchID, OutTradeNo: no, TransactionID: "42000" + no, OutRefundNo: "r-" + no,
				RefundID: "50300" + no, RefundStatus: "SUCCESS", SuccessTime: "2025-01-15T11:00:00+08:00",
				Amount: wxpaysim.RefundNoticeAmount{Total: 100, Refund: 100, PayerTotal: 100, PayerRefund: 100}}
			edit(&r)
			n, err := keys.RefundNotification(r, wxpaysim.PublicKeyMode(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		for _, c := range []struct {
			path, no string
			n        wxpaysim.Notification
		}{
			{"payment", "ol-openid", pay("ol-openid", func(tx *wxpaysim.Transaction) { tx.Payer.OpenID = strings.Repeat("o", 129) })},
			{"refund", "ol-refundid", refund("ol-refundid", func(r *wxpaysim.RefundNotice) { r.RefundID = strings.Repeat("5", 65) })},
			{"refund", "ol-txid", refund("ol-txid", func(r *wxpaysim.RefundNotice) { r.TransactionID = strings.Repeat("4", 65) })},
		} {
			if code := e.post(t, c.path, c.n); code != http.StatusBadRequest {
				t.Errorf("%s: answered %d, want 400", c.no, code)
			}
			if got := rfLedger(t, s, c.no); got != "payment none, 0 notices, jobs [], anomalies []" {
				t.Errorf("%s: the ledger holds %s", c.no, got)
			}
		}
		if code := e.post(t, "payment", pay("ol-ok", func(tx *wxpaysim.Transaction) { tx.Payer.OpenID = strings.Repeat("o", 128) })); code != http.StatusNoContent {
			t.Errorf("an openid of 128 answered %d, want 204", code)
		}
	})
}
