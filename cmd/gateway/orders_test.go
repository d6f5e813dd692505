package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

func order(no string, amount int64) map[string]any {
	return map[string]any{"out_trade_no": no, "amount_total": amount, "payer_openid": "openid-" + no,
		"expire_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}
}

// TestOtherAmountAgainstExpectedOrder: a signed payment of a registered
// order in another currency than CNY is refused (409, nothing recorded).
// One of another amount in CNY is recorded, not refused: answered 204,
// SUCCESS with what WeChat Pay says was paid, flagged AMOUNT_MISMATCH, and
// its stock confirmation held in the dead letters, never sent until a
// person replays it; its redelivery is a plain duplicate (204, nothing
// changes). The replay sends the paid amount to the inventory.
func TestOtherAmountAgainstExpectedOrder(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			m := startGateway(t, cfg)
			k, _ := testKeys(t)
			no := uniqueNo("mm")
			if status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(no, 1000)); status != 201 {
				t.Fatalf("register: status=%d body=%v", status, body)
			}
			// The registered amount, but in another currency: refused.
			usd := paidTx(k, no, 1000)
			usd.Amount.Currency, usd.TransactionID = "USD", "42001"+no // another payment attempt
			status, body := post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(usd, wxpaysim.PublicKeyMode(), time.Now())))
			if status != 409 || body["reason"] != "ECONFLICT" || !strings.Contains(fmt.Sprint(body["message"]), "CNY") {
				t.Fatalf("USD: status=%d body=%v, want 409 ECONFLICT naming CNY", status, body)
			}
			if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 0} {
				t.Fatalf("after USD: payments/history/notifications = %v, want [1 1 0]", got)
			}

			n := mustNotification(k.PaymentNotification(paidTx(k, no, 999), wxpaysim.PublicKeyMode(), time.Now()))
			for i := range 2 { // WeChat Pay's delivery, then a redelivery (signed anew)
				if i > 0 {
					n = mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
				}
				if status, body := post(t, m.URL()+paymentPath, n); status != 204 {
					t.Fatalf("delivery %d of 999 fen: status=%d body=%v, want 204", i+1, status, body)
				}
				if got := ledgerCounts(t, m, no); got != [3]int64{1, 2, 1} {
					t.Fatalf("delivery %d: payments/history/notifications = %v, want [1 2 1]", i+1, got)
				}
			}
			_, body = apiCall(t, "GET", m.URL()+"/v1/ledger/payments/"+no, financeKey, nil)
			p, _ := body["payment"].(map[string]any)
			anomalies, _ := body["anomalies"].([]any)
			if p["state"] != "SUCCESS" || p["amount_total"] != float64(999) || p["expected_amount"] != float64(1000) ||
				len(anomalies) != 2 {
				t.Fatalf("after 999 fen of 1000: %v, want SUCCESS with 999 paid and the two flags", body)
			}
			for _, a := range anomalies {
				if a.(map[string]any)["kind"] != "AMOUNT_MISMATCH" {
					t.Fatalf("anomalies %v, want AMOUNT_MISMATCH only (the USD payment's and this one's)", anomalies)
				}
			}
			held := onlyJob(t, m.Store, no, ledger.JobDead)
			if held.Key != "confirm:"+no || held.Attempts != 0 || !strings.HasPrefix(held.LastError, "held: the order was registered for 1000 fen and paid 999 fen") {
				t.Fatalf("confirmation = %+v, want confirm:%s held, never attempted", held, no)
			}
			status, body, _ = replayCall(t, fmt.Sprintf("%s/v1/ops/outbox/%d/replay", m.URL(), held.ID), `"`+held.Version+`"`)
			if status != 200 {
				t.Fatalf("replay: status=%d body=%v", status, body)
			}
			done := onlyJob(t, m.Store, no, ledger.JobDone)
			if got := fmt.Sprint(outcomes(done.History)); got != "[dead replayed done]" {
				t.Fatalf("confirmation history %s, want [dead replayed done]: held from the start, sent after the replay", got)
			}
			if c := inv.Confirmations(); inv.ConfirmCount(no) != 1 || !confirmedFor(c, no, 999) {
				t.Fatalf("inventory confirmations %+v, want %s confirmed once for 999 fen", c, no)
			}
		})
	}
}

// confirmedFor reports whether the inventory holds a confirmation of order
// no for amount fen.
func confirmedFor(cs []inventorysim.ConfirmationRecord, no string, amount int64) bool {
	for _, c := range cs {
		if c.OutTradeNo == no && c.AmountTotal == amount {
			return true
		}
	}
	return false
}

func TestOrderAPIAuthAndValidation(t *testing.T) {
	m := startGateway(t, testConfig(t, backends[0]))
	url := m.URL() + "/v1/orders"
	no := uniqueNo("auth")
	cases := []struct {
		name   string
		key    string
		body   any
		status int
		code   string
	}{
		{"no key", "", order(no, 100), 401, "EUNAUTHORIZED"},
		{"unknown key", "nope", order(no, 100), 401, "EUNAUTHORIZED"},
		{"finance may not register", financeKey, order(no, 100), 403, "EFORBIDDEN"},
		{"zero amount", serviceKey, order(no, 0), 400, "EINVALID"},
		{"negative amount", serviceKey, order(no, -5), 400, "EINVALID"},
		{"bad out_trade_no", serviceKey, order("x'; DROP TABLE payments;--", 100), 400, "EINVALID"},
		{"past expiry", serviceKey, map[string]any{"out_trade_no": no, "amount_total": 1, "expire_at": "2001-01-01T00:00:00Z"}, 400, "EINVALID"},
		{"expiry past year 9999 in UTC", serviceKey, map[string]any{"out_trade_no": no, "amount_total": 1,
			"expire_at": "9999-12-31T23:59:59-10:00"}, 400, "EINVALID"},
		{"unknown field", serviceKey, map[string]any{"out_trade_no": no, "amount": 1}, 400, "EINVALID"},
		{"created", serviceKey, order(no, 100), 201, ""},
		{"same again", serviceKey, order(no, 100), 200, ""},
		{"other amount", serviceKey, order(no, 101), 409, "ECONFLICT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := apiCall(t, "POST", url, tc.key, tc.body)
			if status != tc.status || tc.code != "" && body["code"] != tc.code {
				t.Fatalf("status=%d body=%v, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
	if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 0} {
		t.Fatalf("rows = %v, want one registration", got)
	}
	if status, _ := apiCall(t, "GET", m.URL()+"/v1/ledger/payments/"+no, serviceKey, nil); status != 403 {
		t.Fatalf("service reading ledger: status=%d, want 403", status)
	}
	if status, _ := apiCall(t, "GET", m.URL()+"/v1/ledger/payments/"+no, opsKey, nil); status != 200 {
		t.Fatalf("ops reading ledger: status=%d, want 200", status)
	}
	if status, body := apiCall(t, "GET", m.URL()+"/v1/ledger/payments/nosuchorder", financeKey, nil); status != 404 || body["code"] != "ENOTFOUND" {
		t.Fatalf("unknown order: status=%d body=%v", status, body)
	}
}
