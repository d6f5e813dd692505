package main

import (
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
		})
	}
}
