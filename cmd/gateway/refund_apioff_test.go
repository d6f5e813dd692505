package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// TestJanitorRunsWithTheRefundAPIOff: a refund whose outcome is unknown
// when the refund API is turned off (refunds.jwt removed, the merchant key
// kept) is still settled by the janitor of a gateway without the API: its
// amount stays reserved otherwise, and the refund is never asked about.
func TestJanitorRunsWithTheRefundAPIOff(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, func(c *Config) { c.WechatPay.Timeout = time.Second })
			no := e.pay(t, "o-off", 100)
			e.sim.SetFaults(wxpaysim.Faults{PathPrefix: "/v3/refund/domestic/refunds", Fail5xxNext: 1})
			a := e.refund(t, token(t, "o-off"), "off-"+no, refundBody(no, 100))
			rno, _ := a.json(t)["out_refund_no"].(string)
			if a.status != 202 || rno == "" {
				t.Fatalf("status=%d body=%s, want 202 with the refund's number", a.status, a.body)
			}
			pastSafetyBuffer(t, e.m, rno)

			cfg := e.m.Config
			cfg.Refunds.JWT = JWTConfig{}
			cfg.Refunds.JanitorInterval = 50 * time.Millisecond
			off := startGateway(t, cfg)
			req, _ := http.NewRequest("POST", off.URL()+"/v1/refunds", strings.NewReader("{}"))
			if status := do(t, req).status; status != 404 {
				t.Fatalf("POST /v1/refunds on the gateway without the API: %d, want 404", status)
			}
			deadline := time.Now().Add(20 * time.Second)
			for ledgerRefund(t, off, rno).State != ledger.RefundProcessing {
				if time.Now().After(deadline) {
					t.Fatalf("refund %+v not settled by the janitor of a gateway without the refund API",
						ledgerRefund(t, off, rno))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if n := e.sim.RefundCount(rno); n != 1 {
				t.Fatalf("WeChat Pay executed the refund %d times, want once", n)
			}
		})
	}
}
