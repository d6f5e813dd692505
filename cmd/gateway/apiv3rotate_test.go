package main

import (
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// randomAPIv3Key is a fresh 32-character APIv3 key.
func randomAPIv3Key(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// withAPIv3Key is k encrypting notifications with key instead.
func withAPIv3Key(k *wxpaysim.Keys, key string) *wxpaysim.Keys {
	other := *k
	other.APIv3Key = key
	return &other
}

// previousKeyCount reads gateway_notifications_previous_apiv3_key_total.
func previousKeyCount(t *testing.T, m *Main, kind string) float64 {
	t.Helper()
	return scrape(t, m.URL(), `gateway_notifications_previous_apiv3_key_total{kind="`+kind+`"}`)
}

// TestPreviousAPIv3KeyDuringRotation: the gateway runs with a new APIv3
// key and the replaced one as wechatpay.previous_apiv3_key_file while
// WeChat Pay still encrypts with the old one. Its payment and refund
// notifications are recorded once (a redelivery is a duplicate) and
// counted in gateway_notifications_previous_apiv3_key_total; those under
// the new key are recorded and not counted; one under an unrelated key is
// refused EDECRYPT and leaves no row. Before, the gateway held one key:
// every notification was refused EDECRYPT from the switch in the merchant
// platform until every instance ran with the new key.
func TestPreviousAPIv3KeyDuringRotation(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			k, _ := testKeys(t)
			current := randomAPIv3Key(t)
			file := filepath.Join(t.TempDir(), "previous_apiv3_key")
			writeFile(t, file, k.APIv3Key+"\n")
			e := startRefundEnv(t, b, func(c *Config) {
				c.WechatPay.APIv3Key, c.WechatPay.PreviousAPIv3KeyFile = current, file
			})
			// Under the current key: recorded, not counted.
			if no := uniqueNo("cur"); postPayment(t, e.m, withAPIv3Key(k, current), paidTx(k, no, 100)) != 204 ||
				ledgerCounts(t, e.m, no) != [3]int64{1, 1, 1} || previousKeyCount(t, e.m, "payment") != 0 {
				t.Fatalf("current key: rows %v, counted %v", ledgerCounts(t, e.m, no), previousKeyCount(t, e.m, "payment"))
			}
			no := previousKeyPayment(t, e)
			r := previousKeyRefund(t, e, no)
			assertUnrelatedKeyRefused(t, e, r)
			for kind, want := range map[string]float64{"payment": 1, "refund": 1} {
				if got := previousKeyCount(t, e.m, kind); got != want {
					t.Fatalf("%s counted %v, want %v", kind, got, want)
				}
			}
		})
	}
}

// postPayment posts tx's payment notification encrypted under k's APIv3 key.
func postPayment(t *testing.T, m *Main, k *wxpaysim.Keys, tx wxpaysim.Transaction) int {
	t.Helper()
	status, body := post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now())))
	if status != 204 {
		t.Logf("payment notification: status=%d body=%v", status, body)
	}
	return status
}

// previousKeyPayment delivers a payment notification under the previous
// key twice (a redelivery), counted once from the first, and returns its
// out_trade_no.
func previousKeyPayment(t *testing.T, e *refundEnv) string {
	t.Helper()
	no := uniqueNo("prv")
	tx, err := e.sim.Pay(t.Context(), no, 100, "o-rota", true)
	if err != nil {
		t.Fatal(err)
	}
	n := mustNotification(e.k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))
	for i := range 2 {
		if status, body := post(t, e.m.URL()+paymentPath, n); status != 204 {
			t.Fatalf("delivery %d under the previous key: status=%d body=%v", i, status, body)
		}
		// Counted on the first delivery; the redelivery is a duplicate.
		if got := previousKeyCount(t, e.m, "payment"); got != 1 {
			t.Fatalf("after delivery %d under the previous key, payment counted %v, want 1", i, got)
		}
		n = mustNotification(n.Resign(e.k, wxpaysim.PublicKeyMode(), time.Now()))
	}
	if got := ledgerCounts(t, e.m, no); got != [3]int64{1, 1, 1} {
		t.Fatalf("payments/history/notifications = %v, want [1 1 1]", got)
	}
	if got := scrape(t, e.m.URL(), `gateway_notifications_total{kind="payment",outcome="duplicate"}`); got != 1 {
		t.Fatalf("payment duplicates counted %v, want 1", got)
	}
	return no
}

// previousKeyRefund refunds order no and delivers its REFUND.SUCCESS
// notification under the previous key twice.
func previousKeyRefund(t *testing.T, e *refundEnv, no string) *ledger.Refund {
	t.Helper()
	a := e.refund(t, token(t, "o-rota"), "rota-"+no, refundBody(no, 40))
	if a.status != 201 {
		t.Fatalf("refund: %d %s", a.status, a.body)
	}
	rno, _ := a.json(t)["out_refund_no"].(string)
	code, n := e.refundNotice(t, ledgerRefund(t, e.m, rno), "SUCCESS")
	if code != 204 {
		t.Fatalf("refund notification under the previous key: status=%d", code)
	}
	if got := previousKeyCount(t, e.m, "refund"); got != 1 {
		t.Fatalf("refund notification under the previous key counted %v, want 1", got)
	}
	again := mustNotification(n.Resign(e.k, wxpaysim.PublicKeyMode(), time.Now()))
	if code, body := post(t, e.m.URL()+refundNotifyPath, again); code != 204 {
		t.Fatalf("refund redelivery: status=%d body=%v", code, body)
	}
	if notices, _ := e.m.Store.Notices(t.Context(), no); len(notices) != 2 {
		t.Fatalf("%d notices stored for the order, want 2 (payment, refund)", len(notices))
	}
	r := ledgerRefund(t, e.m, rno)
	if r.State != ledger.RefundSuccess {
		t.Fatalf("refund %s, want SUCCESS", r.State)
	}
	if got := scrape(t, e.m.URL(), `gateway_notifications_total{kind="refund",outcome="duplicate"}`); got != 1 {
		t.Fatalf("refund duplicates counted %v, want 1", got)
	}
	return r
}

// assertUnrelatedKeyRefused: a payment and a refund notification that
// neither key opens are refused EDECRYPT and change nothing.
func assertUnrelatedKeyRefused(t *testing.T, e *refundEnv, r *ledger.Refund) {
	t.Helper()
	other := withAPIv3Key(e.k, randomAPIv3Key(t))
	no := uniqueNo("unr")
	closed := wxpaysim.RefundNotice{MchID: e.k.MchID, OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID,
		OutRefundNo: r.OutRefundNo, RefundID: "50" + r.OutRefundNo, RefundStatus: "CLOSED",
		Amount: wxpaysim.RefundNoticeAmount{Total: r.Total, Refund: r.Amount, PayerTotal: r.Total, PayerRefund: r.Amount}}
	before := tableCounts(t, e.m)
	for path, n := range map[string]wxpaysim.Notification{
		paymentPath:      mustNotification(other.PaymentNotification(paidTx(e.k, no, 100), wxpaysim.PublicKeyMode(), time.Now())),
		refundNotifyPath: mustNotification(other.RefundNotification(closed, wxpaysim.PublicKeyMode(), time.Now())),
	} {
		status, body := post(t, e.m.URL()+path, n)
		if status != 400 || body["code"] != "FAIL" || body["reason"] != "EDECRYPT" ||
			body["message"] != "resource could not be decrypted" {
			t.Fatalf("%s under an unrelated key: status=%d body=%v, want 400 FAIL/EDECRYPT", path, status, body)
		}
	}
	if after := tableCounts(t, e.m); after != before {
		t.Fatalf("rows in payments/state_history/notifications went from %v to %v", before, after)
	}
	if got := ledgerRefund(t, e.m, r.OutRefundNo).State; got != ledger.RefundSuccess {
		t.Fatalf("refund %s after a notification under an unrelated key, want SUCCESS", got)
	}
}
