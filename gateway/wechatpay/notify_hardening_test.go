package wechatpay_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestNonRSAPlatformCertificateIsRefused: a platform certificate that is
// not RSA is refused when the verifier is built, as the API client refuses
// it: wechatpay-go's verifier panics on a notification naming its serial
// (any signature, a forger's too).
func TestNonRSAPlatformCertificateIsRefused(t *testing.T) {
	k := fuzzKeys(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5eed0001), Subject: pkix.Name{CommonName: "ec platform"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	_, err = wechatpay.NewVerifier(wechatpay.NotifyConfig{APIv3Key: k.APIv3Key, Certificates: append(k.Certificates(), ec)})
	if err == nil || !strings.Contains(err.Error(), "RSA") {
		t.Fatalf("an ECDSA platform certificate: %v, want a refusal", err)
	}
}

// TestFarFutureTimestampIsStale: checkHeaders computed Now().Sub(ts);
// for a timestamp ~300 years ahead Sub saturated at minDuration and -skew
// overflowed back to it, so the gateway's own ±5 min check passed it (only
// the SDK's check then refused it, as ESIGNATURE). It is ESTALE.
func TestFarFutureTimestampIsStale(t *testing.T) {
	k := fuzzKeys(t)
	v := fuzzVerifier(t, k)
	n, err := k.PaymentNotification(expiryTx(k, "far-ts"), wxpaysim.PublicKeyMode(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n.Header = n.Header.Clone()
	n.Header.Set("Wechatpay-Timestamp", strconv.FormatInt(1<<62, 10))
	_, err = v.Verify(context.Background(), n.Header, n.Body)
	if code := gateway.ErrorCode(err); code != gateway.CodeStale {
		t.Fatalf("far-future timestamp refused with %s (%v), want %s from the gateway's window check", code, err, gateway.CodeStale)
	}
}
