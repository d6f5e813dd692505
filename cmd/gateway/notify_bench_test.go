package main

import (
	"net/http"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// BenchmarkPaymentNotification posts pre-signed new notifications to a
// gateway on MySQL and Redis over real HTTP, one at a time; run it with
// -cpuprofile to see where a callback's CPU goes.
func BenchmarkPaymentNotification(b *testing.B) {
	k, _ := testKeys(b)
	cfg := testConfig(b, backend{name: "mysql+redis", mysql: true, redis: true})
	cfg.Log.Level = "error"
	m := startGateway(b, cfg)
	ns := make([]wxpaysim.Notification, b.N)
	for i := range ns {
		ns[i] = mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("bn"), 100), wxpaysim.PublicKeyMode(), time.Now()))
	}
	client := &http.Client{Timeout: 5 * time.Second}
	b.ResetTimer()
	for i := range ns {
		resp, err := ns[i].Post(b.Context(), client, m.URL()+paymentPath)
		if err != nil || resp.StatusCode != 204 {
			b.Fatalf("post %d: %v %v", i, err, resp)
		}
		resp.Body.Close()
	}
}
