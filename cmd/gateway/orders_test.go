package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

func order(no string, amount int64) map[string]any {
	return map[string]any{"out_trade_no": no, "amount_total": amount, "payer_openid": "openid-" + no,
		"expire_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}
}

func TestAmountMismatchAgainstExpectedOrder(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			no := uniqueNo("mm")
			if status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(no, 1000)); status != 201 {
				t.Fatalf("register: status=%d body=%v", status, body)
			}
			n := mustNotification(k.PaymentNotification(paidTx(k, no, 999), wxpaysim.PublicKeyMode(), time.Now()))
			status, body := post(t, m.URL()+paymentPath, n)
			if status != 409 || body["reason"] != "ECONFLICT" {
				t.Fatalf("status=%d body=%v, want 409 ECONFLICT", status, body)
			}
			// Only the registration is in the ledger; the callback is flagged.
			if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 0} {
				t.Fatalf("payments/history/notifications = %v, want [1 1 0]", got)
			}
			_, body = apiCall(t, "GET", m.URL()+"/v1/ledger/payments/"+no, financeKey, nil)
			p := body["payment"].(map[string]any)
			anomalies, _ := body["anomalies"].([]any)
			if p["state"] != "EXPECTED" || len(anomalies) != 1 {
				t.Fatalf("after mismatch: %v", body)
			}
			// The registered amount, but in another currency: refused alike.
			usd := paidTx(k, no, 1000)
			usd.Amount.Currency = "USD"
			status, body = post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(usd, wxpaysim.PublicKeyMode(), time.Now())))
			if status != 409 || body["reason"] != "ECONFLICT" || !strings.Contains(fmt.Sprint(body["message"]), "CNY") {
				t.Fatalf("USD: status=%d body=%v, want 409 ECONFLICT naming CNY", status, body)
			}
			if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 0} {
				t.Fatalf("after USD: payments/history/notifications = %v, want [1 1 0]", got)
			}
			right := mustNotification(k.PaymentNotification(paidTx(k, no, 1000), wxpaysim.PublicKeyMode(), time.Now()))
			if status, _ := post(t, m.URL()+paymentPath, right); status != 204 {
				t.Fatalf("matching payment status=%d", status)
			}
			_, body = apiCall(t, "GET", m.URL()+"/v1/ledger/payments/"+no, financeKey, nil)
			p = body["payment"].(map[string]any)
			if p["state"] != "SUCCESS" || p["amount_total"] != float64(1000) || p["currency"] != "CNY" {
				t.Fatalf("after the matching payment: %v", p)
			}
			var jobs int64
			if err := m.Store.DB().Table("outbox_jobs").Where("job_key = ?", "confirm:"+no).Count(&jobs).Error; err != nil || jobs != 1 {
				t.Fatalf("confirmation jobs = %d (%v), want 1", jobs, err)
			}
		})
	}
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
