package main

import (
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// TestRefundAnswerSignedByPlatformCertificate: during the switch to the
// public key WeChat Pay signs its API answers with a platform certificate
// too. A gateway configured with the public key and the platform
// certificates records a refund whose answer a certificate signed: 201
// PROCESSING, not 202 UNKNOWN. An answer signed by a configured
// certificate past its NotAfter is no verdict: 202 UNKNOWN. The expired
// certificate is named in one WARN at start, not one per user of it.
func TestRefundAnswerSignedByPlatformCertificate(t *testing.T) {
	logs := captureLogs(t)
	k, _ := testKeys(t)
	now := time.Now()
	expired, file := issueCert(t, t.TempDir(), now.Add(-3*365*24*time.Hour), now.Add(-365*24*time.Hour))
	kk := keysWith(k, expired)
	sim := wxpaysim.New(kk, wxpaysim.Options{RefundSettleDelay: -1, NotifyRetryDelays: []time.Duration{}})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	e := startRefundEnv(t, backends[0], func(c *Config) {
		if len(c.WechatPay.PlatformCertFiles) != len(k.Certs) || c.WechatPay.PublicKeyFile == "" {
			t.Fatalf("test config: want the public key and %d platform certificates", len(k.Certs))
		}
		c.WechatPay.BaseURL = srv.URL
		c.WechatPay.PlatformCertFiles = append(slices.Clone(c.WechatPay.PlatformCertFiles), file)
	})
	e.sim = sim
	if w := certWarnings(t, logs.String(), expired.Serial); len(w) != 1 {
		t.Fatalf("WARNs naming the expired certificate at start: %v, want one", w)
	}
	tok := token(t, "o-cert")
	for i := range k.Certs {
		sim.SetSignMode(wxpaysim.CertMode(i))
		no := e.pay(t, "o-cert", 1000)
		a := e.refund(t, tok, "kc"+no, refundBody(no, 300))
		got := a.json(t)
		rno, _ := got["out_refund_no"].(string)
		if a.status != 201 || got["state"] != "PROCESSING" || sim.RefundCount(rno) != 1 {
			t.Fatalf("answer signed by certificate %d: status=%d body=%s, want 201 PROCESSING", i, a.status, a.body)
		}
		if r := ledgerRefund(t, e.m, rno); r.State != ledger.RefundProcessing {
			t.Fatalf("certificate %d: ledger refund %+v, want PROCESSING", i, r)
		}
	}
	sim.SetSignMode(wxpaysim.CertMode(len(kk.Certs) - 1))
	no := e.pay(t, "o-cert", 1000)
	a := e.refund(t, tok, "kx"+no, refundBody(no, 300))
	got := a.json(t)
	rno, _ := got["out_refund_no"].(string)
	if r := ledgerRefund(t, e.m, rno); a.status != 202 || r.State != ledger.RefundUnknown {
		t.Fatalf("answer signed by the expired certificate: status=%d body=%s, ledger %+v; want 202 UNKNOWN", a.status, a.body, r)
	}
}
