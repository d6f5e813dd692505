package wechatpay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// certEnv is a simulator signing its answers with platform certificate
// signer of keys, and a client configured with the public key and certs.
func certEnv(t *testing.T, keys *wxpaysim.Keys, signer int, edit func(*wechatpay.ClientConfig)) *clientEnv {
	t.Helper()
	return startClientEnv(t, keys, wxpaysim.Options{RefundSettleDelay: -1, SignMode: wxpaysim.CertMode(signer)}, edit)
}

// withCertificates configures the client with certs beside the public key.
func withCertificates(k *wxpaysim.Keys) func(*wechatpay.ClientConfig) {
	return func(c *wechatpay.ClientConfig) { c.Certificates = k.Certificates() }
}

// wrongTotal is a refund WeChat Pay refuses (400 INVALID_REQUEST: the
// order's total is 100).
var wrongTotal = refundReq("T1", "RX", 10, 99)

// wantUntrusted requires err to be a 2xx answer whose signature did not
// verify: an unknown outcome.
func wantUntrusted(t *testing.T, what string, err error) {
	t.Helper()
	if !wechatpay.IsUnknownOutcome(err) || !errors.Is(err, wechatpay.ErrInvalidSignature) {
		t.Fatalf("%s: err=%v, want ErrUnknownOutcome and ErrInvalidSignature", what, err)
	}
}

// wantUnverifiedRefusal requires err to be a 400 refusal whose signature
// did not verify.
func wantUnverifiedRefusal(t *testing.T, what string, err error) {
	t.Helper()
	var be *wechatpay.BusinessError
	if !errors.As(err, &be) || be.Status != 400 || be.Verified {
		t.Fatalf("%s: err=%v, want an unverified 400", what, err)
	}
}

// TestClientVerifiesAnswersSignedByPlatformCertificate: during the switch
// to the public key WeChat Pay signs API answers with a platform
// certificate too. With the certificates configured beside the public key,
// order and refund queries and refund creation succeed, and a refusal
// signed by a certificate is WeChat Pay's verified verdict, not an unknown
// outcome; with the public key alone the same answers are refused.
func TestClientVerifiesAnswersSignedByPlatformCertificate(t *testing.T) {
	keys, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	for signer := range keys.Certs {
		e := certEnv(t, keys, signer, withCertificates(keys))
		e.pay(t, "T1", 100)
		ctx := context.Background()
		if tx, err := e.client.QueryOrder(ctx, "T1"); err != nil || tx.TradeState != "SUCCESS" {
			t.Fatalf("cert %d: QueryOrder: %+v %v", signer, tx, err)
		}
		r, err := e.client.CreateRefund(ctx, refundReq("T1", "R1", 30, 100))
		if err != nil || r.Status != "PROCESSING" {
			t.Fatalf("cert %d: CreateRefund: %+v %v", signer, r, err)
		}
		if q, err := e.client.QueryRefund(ctx, "R1"); err != nil || q.RefundID != r.RefundID {
			t.Fatalf("cert %d: QueryRefund: %+v %v", signer, q, err)
		}
		_, err = e.client.CreateRefund(ctx, refundReq("T1", "R2", 71, 100))
		var be *wechatpay.BusinessError
		if !errors.As(err, &be) || be.Status != 400 || !be.Verified || wechatpay.IsUnknownOutcome(err) {
			t.Fatalf("cert %d: over refund: err=%v, want a 400 signed by WeChat Pay", signer, err)
		}
		if err := e.client.CloseOrder(ctx, "T1"); !errors.As(err, &be) || !be.Verified {
			t.Fatalf("cert %d: close a paid order: err=%v, want a refusal signed by WeChat Pay", signer, err)
		}
		if _, err := e.client.QueryRefund(ctx, "NOPE"); !errors.Is(err, wechatpay.ErrNotFound) {
			t.Fatalf("cert %d: unknown refund: err=%v, want ErrNotFound", signer, err)
		}
		// The control: the simulator does sign with the certificate.
		keyOnly := certEnv(t, keys, signer, nil)
		keyOnly.pay(t, "T1", 100)
		_, err = keyOnly.client.QueryOrder(ctx, "T1")
		wantUntrusted(t, "public key only", err)
		_, err = keyOnly.client.CreateRefund(ctx, wrongTotal)
		wantUnverifiedRefusal(t, "public key only, refusal", err)
	}
}

// TestClientRefusesAnswersOfCertificateOutOfForce: an answer signed by a
// configured platform certificate past its NotAfter, or before its
// NotBefore, is refused as unverifiable (WeChat Pay no longer guards a
// retired certificate's key): an unknown outcome, or an unverified
// refusal. At a time within its validity (ClientConfig.Now) it verifies.
func TestClientRefusesAnswersOfCertificateOutOfForce(t *testing.T) {
	base, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired := expiryCert(t, now.Add(-3*365*24*time.Hour), now.Add(-365*24*time.Hour))
	early := expiryCert(t, now.Add(24*time.Hour), now.Add(5*365*24*time.Hour))
	keys := withCerts(base, expired, early)
	for i, c := range map[int]wxpaysim.Cert{len(keys.Certs) - 2: expired, len(keys.Certs) - 1: early} {
		e := certEnv(t, keys, i, withCertificates(keys))
		e.pay(t, "T1", 100)
		ctx := context.Background()
		_, err := e.client.QueryOrder(ctx, "T1")
		wantUntrusted(t, "query order", err)
		if !strings.Contains(err.Error(), "validity period") {
			t.Fatalf("query order: err=%v does not say why", err)
		}
		_, err = e.client.CreateRefund(ctx, refundReq("T1", "R1", 30, 100))
		wantUntrusted(t, "create refund", err)
		_, err = e.client.QueryRefund(ctx, "R1")
		wantUntrusted(t, "query refund", err)
		_, err = e.client.CreateRefund(ctx, wrongTotal)
		wantUnverifiedRefusal(t, "refusal", err)

		inForce := certEnv(t, keys, i, func(cfg *wechatpay.ClientConfig) {
			cfg.Certificates = keys.Certificates()
			cfg.Now = func() time.Time { return c.Cert.NotBefore.Add(time.Hour) }
		})
		inForce.pay(t, "T1", 100)
		if _, err := inForce.client.QueryOrder(ctx, "T1"); err != nil {
			t.Fatalf("certificate in force at Now: %v", err)
		}
	}
}

// TestClientRefusesAnswersOfUnknownSerial: an answer signed under a serial
// the client was not configured with is refused, while one signed by a
// configured certificate is accepted.
func TestClientRefusesAnswersOfUnknownSerial(t *testing.T) {
	base, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	stranger := expiryCert(t, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	keys := withCerts(base, stranger)
	e := certEnv(t, keys, len(keys.Certs)-1, withCertificates(base))
	e.pay(t, "T1", 100)
	ctx := context.Background()
	_, err = e.client.QueryOrder(ctx, "T1")
	wantUntrusted(t, "query order", err)
	_, err = e.client.CreateRefund(ctx, wrongTotal)
	wantUnverifiedRefusal(t, "refusal", err)
	e.sim.SetSignMode(wxpaysim.CertMode(0))
	if _, err := e.client.QueryOrder(ctx, "T1"); err != nil {
		t.Fatalf("signed by a configured certificate: %v", err)
	}
	if _, err := e.client.CreateRefund(ctx, wrongTotal); !errors.As(err, new(*wechatpay.BusinessError)) ||
		!strings.Contains(err.Error(), "INVALID_REQUEST") || strings.Contains(err.Error(), "unsigned") {
		t.Fatalf("refusal signed by a configured certificate: %v", err)
	}
}
