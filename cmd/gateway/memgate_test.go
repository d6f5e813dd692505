package main

import (
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestMemoryGateEntriesAreGauged: gateway_memory_gate_entries counts the
// nonces and committed notification ids the in-process gate holds, with
// Redis and without: three notifications and a redelivery of one (its own
// nonce) are four nonces and three ids. A soak reads them to tell the
// gate's bounded growth from a leak.
func TestMemoryGateEntriesAreGauged(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			first := mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("mg"), 100), wxpaysim.PublicKeyMode(), time.Now()))
			deliveries := []wxpaysim.Notification{first,
				mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("mg"), 100), wxpaysim.PublicKeyMode(), time.Now())),
				mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("mg"), 100), wxpaysim.PublicKeyMode(), time.Now())),
				mustNotification(first.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))}
			for _, n := range deliveries {
				if status, body := post(t, m.URL()+paymentPath, n); status != 204 {
					t.Fatalf("notify: status=%d body=%v", status, body)
				}
			}
			got := map[string]float64{}
			if f := metricFamily(t, m, "gateway_memory_gate_entries"); f != nil {
				for _, s := range f.Metric {
					got[s.GetLabel()[0].GetValue()] = s.GetGauge().GetValue()
				}
			}
			if got["nonces"] != 4 || got["committed"] != 3 {
				t.Fatalf("gateway_memory_gate_entries = %v, want nonces 4, committed 3", got)
			}
		})
	}
}
