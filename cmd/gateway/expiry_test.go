package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// issueCert writes a platform certificate valid from notBefore to
// notAfter, with a key of its own, to dir as WeChat Pay's download gives
// it (PEM), and returns it with its key and the file's path.
func issueCert(t *testing.T, dir string, notBefore, notAfter time.Time) (wxpaysim.Cert, string) {
	t.Helper()
	c, err := wxpaysim.IssueCert(notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "platform_cert_"+c.Serial+".pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c, path
}

// keysWith is k with extra platform certificates appended.
func keysWith(k *wxpaysim.Keys, extra ...wxpaysim.Cert) *wxpaysim.Keys {
	out := *k
	out.Certs = append(slices.Clone(k.Certs), extra...)
	return &out
}

// certWarnings returns the WARN lines naming serial.
func certWarnings(t *testing.T, logs, serial string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if l["level"] == "WARN" && l["serial"] == serial {
			out = append(out, l)
		}
	}
	return out
}

// TestExpiredPlatformCertificateWarnedAndRefused (review 4): a platform
// certificate file past its NotAfter, kept in platform_cert_files as the
// README has operators do after a rotation, is named (serial, file, no
// key material) in a WARN at start; the gateway starts, and a callback
// signed with it is refused as forged (401 ESIGNATURE) and leaves no
// trace: no row, and neither its notification id nor its nonce is taken,
// so WeChat Pay's genuine delivery of the same notification is recorded.
func TestExpiredPlatformCertificateWarnedAndRefused(t *testing.T) {
	logs := captureLogs(t)
	now := time.Now()
	expired, file := issueCert(t, t.TempDir(), now.Add(-3*365*24*time.Hour), now.Add(-365*24*time.Hour))
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig(t, b)
			cfg.WechatPay.PlatformCertFiles = append(slices.Clone(cfg.WechatPay.PlatformCertFiles), file)
			m := startGateway(t, cfg)
			warned := certWarnings(t, logs.String(), expired.Serial)
			if len(warned) == 0 || warned[len(warned)-1]["file"] != file {
				t.Fatalf("no WARN naming the expired certificate %s (%s) at start: %v", expired.Serial, file, warned)
			}
			for _, secret := range []string{"BEGIN", base64.StdEncoding.EncodeToString(expired.Cert.RawSubjectPublicKeyInfo)[:40]} {
				if strings.Contains(logs.String(), secret) {
					t.Fatalf("the log carries key material (%q)", secret)
				}
			}
			k, _ := testKeys(t)
			kk := keysWith(k, expired)
			no := uniqueNo("xc")
			before := tableCounts(t, m)
			forged := mustNotification(kk.PaymentNotification(paidTx(kk, no, 100), wxpaysim.CertMode(len(kk.Certs)-1), time.Now()))
			status, body := post(t, m.URL()+paymentPath, forged)
			if status != 401 || body["code"] != "FAIL" || body["reason"] != "ESIGNATURE" {
				t.Fatalf("signed with the expired certificate: status=%d body=%v, want 401 FAIL/ESIGNATURE", status, body)
			}
			if after := tableCounts(t, m); after != before {
				t.Fatalf("rows in payments/state_history/notifications went from %v to %v", before, after)
			}
			// The same notification (id, nonce, timestamp, body), signed by a
			// live certificate: nothing of the refused one stands in its way.
			genuine := forged
			genuine.Header = forged.Header.Clone()
			msg := genuine.Header.Get("Wechatpay-Timestamp") + "\n" + genuine.Header.Get("Wechatpay-Nonce") + "\n" + string(genuine.Body) + "\n"
			sig, err := utils.SignSHA256WithRSA(msg, k.Certs[0].Key)
			if err != nil {
				t.Fatal(err)
			}
			genuine.Header.Set("Wechatpay-Serial", k.Certs[0].Serial)
			genuine.Header.Set("Wechatpay-Signature", sig)
			if status, body := post(t, m.URL()+paymentPath, genuine); status != 204 {
				t.Fatalf("the genuine delivery after the refusal: status=%d body=%v, want 204", status, body)
			}
			assertRecordedOnce(t, m, no)
			for _, mode := range []wxpaysim.SignMode{wxpaysim.CertMode(1), wxpaysim.PublicKeyMode()} {
				n := mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("xl"), 100), mode, time.Now()))
				if status, body := post(t, m.URL()+paymentPath, n); status != 204 {
					t.Fatalf("live key %+v beside the expired certificate: status=%d body=%v", mode, status, body)
				}
			}
		})
	}
}

// TestEveryPlatformCertificateExpired: with no usable key at all (every
// certificate expired, no public key) the gateway does not start, as
// without any key; with the public key beside them, or a certificate not
// valid yet (it comes into force by itself), or one expiring within the
// 30 days warned of (still in force), it starts and verifies with what is
// usable.
func TestEveryPlatformCertificateExpired(t *testing.T) {
	logs := captureLogs(t)
	k, _ := testKeys(t)
	dir, now := t.TempDir(), time.Now()
	expired, expiredFile := issueCert(t, dir, now.Add(-3*365*24*time.Hour), now.Add(-365*24*time.Hour))
	retired, retiredFile := issueCert(t, dir, now.Add(-2*365*24*time.Hour), now.Add(-time.Hour))
	early, earlyFile := issueCert(t, dir, now.Add(time.Hour), now.Add(5*365*24*time.Hour))

	noKey := testConfig(t, backends[0])
	noKey.WechatPay.PublicKeyFile, noKey.WechatPay.PublicKeyID, noKey.WechatPay.PlatformCertFiles = "", "", nil
	_, noKeyErr := NewMain(context.Background(), noKey)
	certsOnly := testConfig(t, backends[0])
	certsOnly.WechatPay.PublicKeyFile, certsOnly.WechatPay.PublicKeyID = "", ""
	certsOnly.WechatPay.PlatformCertFiles = []string{expiredFile, retiredFile}
	m, err := NewMain(context.Background(), certsOnly)
	if err == nil {
		m.Close()
		t.Fatal("started with every platform certificate expired and no public key")
	}
	if noKeyErr == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("every certificate expired: %v (without any key: %v), want a refusal to start that says why", err, noKeyErr)
	}
	for _, c := range []wxpaysim.Cert{expired, retired} {
		if len(certWarnings(t, logs.String(), c.Serial)) == 0 {
			t.Fatalf("no WARN naming %s", c.Serial)
		}
	}

	withKey := testConfig(t, backends[0])
	withKey.WechatPay.PlatformCertFiles = []string{expiredFile, retiredFile}
	g := startGateway(t, withKey)
	kk := keysWith(k, expired, retired)
	for name, mode := range map[string]wxpaysim.SignMode{"public key": wxpaysim.PublicKeyMode(),
		"expired certificate": wxpaysim.CertMode(len(kk.Certs) - 2), "certificate retired an hour ago": wxpaysim.CertMode(len(kk.Certs) - 1)} {
		want := map[bool]int{true: 204, false: 401}[name == "public key"]
		n := mustNotification(kk.PaymentNotification(paidTx(kk, uniqueNo("ek"), 100), mode, time.Now()))
		if status, body := post(t, g.URL()+paymentPath, n); status != want {
			t.Fatalf("%s: status=%d body=%v, want %d", name, status, body, want)
		}
	}

	notYet := certsOnly
	notYet.WechatPay.PlatformCertFiles = []string{expiredFile, earlyFile}
	startGateway(t, notYet)
	if w := certWarnings(t, logs.String(), early.Serial); len(w) == 0 || w[0]["not_before"] == nil {
		t.Fatalf("no WARN naming the certificate not valid yet: %v", w)
	}

	soon, soonFile := issueCert(t, dir, now.Add(-time.Hour), now.Add(10*24*time.Hour))
	expiring := certsOnly
	expiring.WechatPay.PlatformCertFiles = []string{expiredFile, soonFile}
	e := startGateway(t, expiring)
	ks := keysWith(k, soon)
	n := mustNotification(ks.PaymentNotification(paidTx(ks, uniqueNo("es"), 100), wxpaysim.CertMode(len(ks.Certs)-1), time.Now()))
	if status, body := post(t, e.URL()+paymentPath, n); status != 204 {
		t.Fatalf("signed with the certificate expiring in 10 days: status=%d body=%v, want 204", status, body)
	}
}

// TestOrderRetryAfterExpireAtEndToEnd (review 4): the README's promise on
// a running gateway: demo-1 registered with expire_at T is 201; a queued
// retry of the same body arriving after T is 200 with the stored order
// (not 400 EINVALID); a new order with a past expire_at is still 400 and
// leaves no row.
func TestOrderRetryAfterExpireAtEndToEnd(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			url := m.URL() + "/v1/orders"
			no, late := uniqueNo("ex"), uniqueNo("ex")
			expire := m.Store.Now().Add(1500 * time.Millisecond)
			body := map[string]any{"out_trade_no": no, "amount_total": 250, "payer_openid": "openid-" + no,
				"expire_at": expire.Format(time.RFC3339Nano)}
			status, first := apiCall(t, "POST", url, serviceKey, body)
			if status != 201 {
				t.Fatalf("register: status=%d body=%v", status, first)
			}
			for !m.Store.Now().After(expire) {
				time.Sleep(100 * time.Millisecond)
			}
			status, again := apiCall(t, "POST", url, serviceKey, body)
			if status != 200 || again["expire_at"] != first["expire_at"] || again["out_trade_no"] != no {
				t.Fatalf("retry after expire_at: status=%d body=%v, want 200 and the stored order %v", status, again, first)
			}
			past := map[string]any{"out_trade_no": late, "amount_total": 250, "expire_at": expire.Format(time.RFC3339Nano)}
			if status, got := apiCall(t, "POST", url, serviceKey, past); status != 400 || got["code"] != "EINVALID" {
				t.Fatalf("new order with a past expire_at: status=%d body=%v, want 400 EINVALID", status, got)
			}
			if got := ledgerCounts(t, m, late); got != [3]int64{} {
				t.Fatalf("refused order left rows %v", got)
			}
			if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 0} {
				t.Fatalf("registered order rows %v, want [1 1 0]", got)
			}
		})
	}
}

// TestPlatformCertificateExpiryIsGauged: each platform certificate read
// at start is on /metrics with its NotAfter, so a missed rotation can be
// alerted on before notifications signed with the new certificate are
// refused; one expiring within 30 days is named in a WARN at start too,
// one expiring in 45 days is not.
func TestPlatformCertificateExpiryIsGauged(t *testing.T) {
	logs := captureLogs(t)
	now := time.Now()
	soon, file := issueCert(t, t.TempDir(), now.Add(-time.Hour), now.Add(10*24*time.Hour))
	later, laterFile := issueCert(t, t.TempDir(), now.Add(-time.Hour), now.Add(45*24*time.Hour))
	cfg := testConfig(t, backends[0])
	cfg.WechatPay.PlatformCertFiles = append(slices.Clone(cfg.WechatPay.PlatformCertFiles), file, laterFile)
	m := startGateway(t, cfg)
	k, _ := testKeys(t)
	for _, c := range append(slices.Clone(k.Certs), soon, later) {
		series := `gateway_platform_certificate_expiry_timestamp_seconds{serial="` + c.Serial + `"}`
		if got, want := scrape(t, m.URL(), series), float64(c.Cert.NotAfter.Unix()); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if w := certWarnings(t, logs.String(), soon.Serial); len(w) != 1 || !strings.Contains(fmt.Sprint(w[0]["msg"]), "expires within 30 days") {
		t.Fatalf("WARN lines naming the certificate expiring in 10 days: %v, want one saying so", w)
	}
	for _, c := range []wxpaysim.Cert{k.Certs[0], later} {
		if w := certWarnings(t, logs.String(), c.Serial); len(w) != 0 {
			t.Fatalf("a certificate more than 30 days from its NotAfter was warned of: %v", w)
		}
	}
}
