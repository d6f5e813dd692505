package wechatpay_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// expiryCert issues a platform certificate valid from notBefore to
// notAfter, with a key of its own, as WeChat Pay issues one per rotation.
func expiryCert(t *testing.T, notBefore, notAfter time.Time) wxpaysim.Cert {
	t.Helper()
	c, err := wxpaysim.IssueCert(notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withCerts is k with extra platform certificates appended (CertMode(len(k.Certs)) is the first).
func withCerts(k *wxpaysim.Keys, extra ...wxpaysim.Cert) *wxpaysim.Keys {
	out := *k
	out.Certs = append(slices.Clone(k.Certs), extra...)
	return &out
}

func expiryTx(k *wxpaysim.Keys, no string) wxpaysim.Transaction {
	return wxpaysim.Transaction{AppID: k.AppID, MchID: k.MchID, OutTradeNo: no, TransactionID: "42" + no,
		TradeType: "JSAPI", TradeState: "SUCCESS", SuccessTime: time.Now().Format(time.RFC3339),
		Payer: &wxpaysim.Payer{OpenID: "o-" + no}, Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100, Currency: "CNY"}}
}

// refusedAsForged requires err to be the refusal a bad signature gets.
func refusedAsForged(t *testing.T, what string, n *gateway.Notice, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted (notice %s)", what, n.ID)
	}
	if code := gateway.ErrorCode(err); code != gateway.CodeSignature || gateway.Status(err) != 401 {
		t.Fatalf("%s: refused with %s/%d (%v), want %s/401 as a bad signature", what, code, gateway.Status(err), err, gateway.CodeSignature)
	}
}

// TestExpiredPlatformCertificateIsRefused (review 4): a notification
// signed with a platform certificate past its NotAfter, or before its
// NotBefore, is refused as a bad signature, while the live certificates
// and the public key configured beside it still verify.
func TestExpiredPlatformCertificateIsRefused(t *testing.T) {
	now := time.Now()
	expired := expiryCert(t, now.Add(-3*365*24*time.Hour), now.Add(-365*24*time.Hour))
	early := expiryCert(t, now.Add(24*time.Hour), now.Add(5*365*24*time.Hour))
	k := withCerts(fuzzKeys(t), expired, early)
	iExpired, iEarly := len(k.Certs)-2, len(k.Certs)-1
	for _, withPublicKey := range []bool{true, false} {
		cfg := wechatpay.NotifyConfig{APIv3Key: k.APIv3Key, Certificates: k.Certificates()}
		if withPublicKey {
			cfg.PublicKeyID, cfg.PublicKey = k.PublicKeyID, k.PublicKey()
		}
		v, err := wechatpay.NewVerifier(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for name, i := range map[string]int{"expired": iExpired, "not yet valid": iEarly} {
			n, err := k.PaymentNotification(expiryTx(k, "exp-"+name[:3]), wxpaysim.CertMode(i), now)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(context.Background(), n.Header, n.Body)
			refusedAsForged(t, name+" certificate", got, err)
			got, err = v.Parse(context.Background(), n.Header, n.Body)
			refusedAsForged(t, name+" certificate (Parse)", got, err)
		}
		modes := []wxpaysim.SignMode{wxpaysim.CertMode(0), wxpaysim.CertMode(1)}
		if withPublicKey {
			modes = append(modes, wxpaysim.PublicKeyMode())
		}
		for _, mode := range modes {
			n, err := k.PaymentNotification(expiryTx(k, "live-1"), mode, now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Parse(context.Background(), n.Header, n.Body); err != nil {
				t.Fatalf("public key configured=%v, live key %+v: %v", withPublicKey, mode, err)
			}
		}
	}
}

// TestCertificateExpiringWhileRunning: the validity period is checked
// against the verifier's clock at each notification, not once at start:
// the same certificate verifies until its NotAfter and not after it,
// while the public key (which has no expiry) goes on verifying.
func TestCertificateExpiringWhileRunning(t *testing.T) {
	start := time.Now().Truncate(time.Second)
	// wechatpay-go checks the timestamp against the real clock too, so the
	// verifier's clock moves by less than its 5 minute window.
	c := expiryCert(t, start.Add(-365*24*time.Hour), start.Add(time.Minute))
	k := withCerts(fuzzKeys(t), c)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	v, err := wechatpay.NewVerifier(wechatpay.NotifyConfig{APIv3Key: k.APIv3Key, PublicKeyID: k.PublicKeyID,
		PublicKey: k.PublicKey(), Certificates: k.Certificates(), Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	cert := wxpaysim.CertMode(len(k.Certs) - 1)
	n, err := k.PaymentNotification(expiryTx(k, "run-1"), cert, start)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Parse(context.Background(), n.Header, n.Body); err != nil {
		t.Fatalf("before NotAfter: %v", err)
	}
	clock.Store(c.Cert.NotAfter.UnixNano()) // the last instant it is valid
	if _, err := v.Verify(context.Background(), n.Header, n.Body); err != nil {
		t.Fatalf("at NotAfter: %v", err)
	}
	after := c.Cert.NotAfter.Add(time.Second)
	clock.Store(after.UnixNano())
	signedAfter, err := n.Resign(k, cert, after)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(context.Background(), signedAfter.Header, signedAfter.Body)
	refusedAsForged(t, "signed after NotAfter", got, err)
	got, err = v.Verify(context.Background(), n.Header, n.Body)
	refusedAsForged(t, "signed before NotAfter, delivered after", got, err)
	byKey, err := n.Resign(k, wxpaysim.PublicKeyMode(), after)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Parse(context.Background(), byKey.Header, byKey.Body); err != nil {
		t.Fatalf("public key after the certificate expired: %v", err)
	}
}
