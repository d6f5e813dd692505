package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestAnomaliesAreListedAndCounted: an order registered for one openid
// and paid by another is flagged PAYER_MISMATCH, and finance finds it in
// GET /v1/ledger/anomalies (JSON and CSV, by kind) and in the
// gateway_anomalies gauge, without knowing the order first.
func TestAnomaliesAreListedAndCounted(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			no := uniqueNo("an")
			if status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(no, 1000)); status != 201 {
				t.Fatalf("register: status=%d body=%v", status, body)
			}
			tx := paidTx(k, no, 1000)
			tx.Payer = &wxpaysim.Payer{OpenID: "someone-else"}
			if status, body := post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))); status != 204 {
				t.Fatalf("payment: status=%d body=%v", status, body)
			}
			p := getJSON[struct {
				Items []struct {
					Kind       string `json:"kind"`
					OutTradeNo string `json:"out_trade_no"`
					SeenCount  int    `json:"seen_count"`
				} `json:"items"`
			}](t, m.URL()+"/v1/ledger/anomalies?kind=PAYER_MISMATCH", financeKey)
			if len(p.Items) != 1 || p.Items[0].OutTradeNo != no || p.Items[0].SeenCount != 1 {
				t.Fatalf("anomalies = %+v, want the PAYER_MISMATCH of %s", p.Items, no)
			}
			if other := getPage(t, m.URL()+"/v1/ledger/anomalies?kind=DUPLICATE_PAYMENT"); len(other.Items) != 0 {
				t.Fatalf("kind filter: %+v", other.Items)
			}
			status, csv, _ := getRaw(t, m.URL()+"/v1/ledger/anomalies", financeKey, "text/csv")
			if status != 200 || !strings.HasPrefix(string(csv), "id,kind,ref,") || !strings.Contains(string(csv), "PAYER_MISMATCH,payer:"+no) {
				t.Fatalf("CSV: %d %s", status, csv)
			}
			if got := scrape(t, m.URL(), `gateway_anomalies{kind="PAYER_MISMATCH"}`); got != 1 {
				t.Fatalf("gateway_anomalies{kind=PAYER_MISMATCH} = %v, want 1", got)
			}
			if got := scrape(t, m.URL(), `gateway_anomalies_open{kind="PAYER_MISMATCH"}`); got != 1 {
				t.Fatalf("gateway_anomalies_open{kind=PAYER_MISMATCH} = %v, want 1", got)
			}
			resolveAnomaly(t, m, no)
		})
	}
}

// resolveAnomaly resolves the one anomaly of order no through the API and
// checks what a person sees: the note kept, a second resolution refused,
// the state filter. (The gauges, read every 10 s, are tested in gateway.)
func resolveAnomaly(t *testing.T, m *Main, no string) {
	t.Helper()
	type item struct {
		ID         uint64 `json:"id"`
		State      string `json:"state"`
		ResolvedBy string `json:"resolved_by"`
		Resolution string `json:"resolution"`
	}
	type page struct {
		Items []item `json:"items"`
	}
	open := getJSON[page](t, m.URL()+"/v1/ledger/anomalies?state=OPEN&out_trade_no="+no, financeKey)
	if len(open.Items) != 1 || open.Items[0].State != "OPEN" {
		t.Fatalf("open anomalies of %s = %+v, want one", no, open.Items)
	}
	url := m.URL() + "/v1/ledger/anomalies/" + strconv.FormatUint(open.Items[0].ID, 10) + "/resolve"
	refused := []struct {
		url, key string
		body     any
		status   int
	}{
		{url, serviceKey, map[string]any{"resolution": "x"}, 403},
		{url, financeKey, map[string]any{"resolution": "  "}, 400},
		{url, financeKey, map[string]any{"resolution": strings.Repeat("x", 513)}, 400},
		{url, financeKey, map[string]any{"resolution": "x", "state": "OPEN"}, 400},
		{m.URL() + "/v1/ledger/anomalies/0/resolve", financeKey, map[string]any{"resolution": "x"}, 400},
		{m.URL() + "/v1/ledger/anomalies/999999999/resolve", financeKey, map[string]any{"resolution": "x"}, 404},
	}
	for _, r := range refused {
		if status, body := apiCall(t, "POST", r.url, r.key, r.body); status != r.status || body["code"] == nil {
			t.Errorf("resolve %v as %.3s: status=%d body=%v, want %d with a code", r.body, r.key, status, body, r.status)
		}
	}
	status, body := apiCall(t, "POST", url, financeKey, map[string]any{"resolution": "payer confirmed; refunded by hand"})
	a, _ := body["anomaly"].(map[string]any)
	if status != 200 || a["state"] != "RESOLVED" || a["resolved_by"] != "finance:fin" || a["resolved_at"] == nil {
		t.Fatalf("resolve: status=%d body=%v", status, body)
	}
	if status, body := apiCall(t, "POST", url, opsKey, map[string]any{"resolution": "again"}); status != 409 || body["code"] != "ECONFLICT" {
		t.Fatalf("second resolve: status=%d body=%v, want 409 ECONFLICT", status, body)
	}
	got := getJSON[page](t, m.URL()+"/v1/ledger/anomalies?state=RESOLVED&out_trade_no="+no, financeKey)
	if len(got.Items) != 1 || got.Items[0].Resolution != "payer confirmed; refunded by hand" {
		t.Fatalf("resolved anomalies of %s = %+v, want the first note kept", no, got.Items)
	}
	if open := getJSON[page](t, m.URL()+"/v1/ledger/anomalies?state=OPEN&out_trade_no="+no, financeKey); len(open.Items) != 0 {
		t.Fatalf("open anomalies after resolving: %+v", open.Items)
	}
}
