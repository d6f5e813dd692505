package wechatpay_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// The fuzz seeds are signed with throwaway keys committed under
// testdata/fuzzkeys. wechatpay-go's validator checks timestamps against
// the real clock, so FuzzParse adds seeds signed at start-up (valid for
// the run); the committed corpus is the same shapes signed at corpusTime
// (genuine signatures, now stale).
var corpusTime = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

const fuzzKeysDir = "testdata/fuzzkeys"

func fuzzKeys(tb testing.TB) *wxpaysim.Keys {
	tb.Helper()
	k, err := wxpaysim.LoadKeys(fuzzKeysDir)
	if err != nil {
		tb.Fatalf("load %s (regenerate with WXPAY_WRITE_FUZZ_CORPUS=1): %v", fuzzKeysDir, err)
	}
	redate(tb, k, time.Now())
	return k
}

// redate issues k's platform certificates anew, with the same keys and
// serials, valid from now on as when they were generated (the newest from
// a day before now, for 5 years): the committed ones run out on a fixed
// date (2031), after which every test of a live certificate would fail.
func redate(tb testing.TB, k *wxpaysim.Keys, now time.Time) {
	tb.Helper()
	newest := k.Certs[0].Cert.NotBefore
	for _, c := range k.Certs {
		if c.Cert.NotBefore.After(newest) {
			newest = c.Cert.NotBefore
		}
	}
	shift := now.Add(-24 * time.Hour).Sub(newest)
	for i, c := range k.Certs {
		tmpl := *c.Cert
		tmpl.NotBefore, tmpl.NotAfter = c.Cert.NotBefore.Add(shift), c.Cert.NotAfter.Add(shift)
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &c.Key.PublicKey, c.Key)
		if err != nil {
			tb.Fatalf("redate platform certificate %s: %v", c.Serial, err)
		}
		if k.Certs[i].Cert, err = x509.ParseCertificate(der); err != nil {
			tb.Fatalf("redate platform certificate %s: %v", c.Serial, err)
		}
	}
}

func fuzzVerifier(tb testing.TB, k *wxpaysim.Keys) *wechatpay.Verifier {
	tb.Helper()
	v, err := wechatpay.NewVerifier(wechatpay.NotifyConfig{APIv3Key: k.APIv3Key, PublicKeyID: k.PublicKeyID,
		PublicKey: k.PublicKey(), Certificates: k.Certificates()})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// fuzzInput is one notification as the fuzzer sees it: the body and the
// four signed headers.
type fuzzInput struct {
	body                                []byte
	serial, signature, timestamp, nonce string
}

func inputOf(n wxpaysim.Notification) fuzzInput {
	return fuzzInput{body: n.Body, serial: n.Header.Get("Wechatpay-Serial"), signature: n.Header.Get("Wechatpay-Signature"),
		timestamp: n.Header.Get("Wechatpay-Timestamp"), nonce: n.Header.Get("Wechatpay-Nonce")}
}

// fuzzSeeds are valid notifications in every signing mode and the usual
// ways of getting one wrong.
func fuzzSeeds(tb testing.TB, k *wxpaysim.Keys, fuzzNow time.Time) map[string]fuzzInput {
	tb.Helper()
	tx := wxpaysim.Transaction{AppID: k.AppID, MchID: k.MchID, OutTradeNo: "fuzz000001", TransactionID: "4200000001",
		TradeType: "JSAPI", TradeState: "SUCCESS", SuccessTime: fuzzNow.Format(time.RFC3339),
		Payer: &wxpaysim.Payer{OpenID: "o-fuzz"}, Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100, Currency: "CNY"}}
	must := func(n wxpaysim.Notification, err error) wxpaysim.Notification {
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	valid := must(k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), fuzzNow))
	seeds := map[string]fuzzInput{
		"valid-public-key": inputOf(valid),
		"valid-cert-0":     inputOf(must(valid.Resign(k, wxpaysim.CertMode(0), fuzzNow))),
		"valid-cert-1":     inputOf(must(valid.Resign(k, wxpaysim.CertMode(1), fuzzNow))),
		"valid-refund": inputOf(must(k.NewNotification("", "REFUND.SUCCESS", "refund",
			[]byte(`{"out_refund_no":"r1","refund_status":"SUCCESS"}`), wxpaysim.PublicKeyMode(), fuzzNow))),
		"stale":      inputOf(must(valid.Resign(k, wxpaysim.PublicKeyMode(), fuzzNow.Add(-6*time.Minute)))),
		"empty-body": inputOf(must(wxpaysim.Notification{ID: "e"}.Resign(k, wxpaysim.PublicKeyMode(), fuzzNow))),
	}
	tampered := inputOf(valid)
	tampered.body = bytes.Replace(tampered.body, []byte(`"ciphertext":"`), []byte(`"ciphertext":"AAAA`), 1)
	seeds["tampered-body"] = tampered
	wrongSerial := inputOf(valid)
	wrongSerial.serial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	seeds["unknown-serial"] = wrongSerial
	probe := inputOf(valid)
	probe.signature = "WECHATPAY/SIGNTEST/" + base64.StdEncoding.EncodeToString([]byte("x"))
	seeds["signature-probe"] = probe
	badCT := valid
	badCT.Body = bytes.Replace(valid.Body, []byte(`"algorithm":"AEAD_AES_256_GCM"`), []byte(`"algorithm":"NONE"`), 1)
	seeds["signed-bad-algorithm"] = inputOf(must(badCT.Resign(k, wxpaysim.PublicKeyMode(), fuzzNow)))
	garbage := wxpaysim.Notification{Body: []byte(`{"id":"x","event_type":"TRANSACTION.SUCCESS","resource":{}}`)}
	seeds["signed-garbage"] = inputOf(must(garbage.Resign(k, wxpaysim.PublicKeyMode(), fuzzNow)))
	return seeds
}

// FuzzParse feeds arbitrary bodies and headers to the verifier: it must
// never panic, and whatever it accepts must carry a genuine signature by
// one of the configured keys over exactly these bytes, within the window.
func FuzzParse(f *testing.F) {
	k := fuzzKeys(f)
	v := fuzzVerifier(f, k)
	for _, s := range fuzzSeeds(f, k, time.Now()) {
		f.Add(s.body, s.serial, s.signature, s.timestamp, s.nonce)
	}
	f.Fuzz(func(t *testing.T, body []byte, serial, signature, timestamp, nonce string) {
		h := http.Header{}
		h.Set("Wechatpay-Serial", serial)
		h.Set("Wechatpay-Signature", signature)
		h.Set("Wechatpay-Timestamp", timestamp)
		h.Set("Wechatpay-Nonce", nonce)
		n, err := v.Parse(context.Background(), h, body)
		if err != nil {
			return
		}
		if why := genuine(k, h, body); why != "" {
			t.Fatalf("accepted a notification that is not genuinely signed: %s", why)
		}
		if n.ID == "" || n.EventType == "" || n.Nonce != h.Get("Wechatpay-Nonce") {
			t.Fatalf("accepted notification lacks fields: %+v", n)
		}
	})
}

// genuine re-checks a signature independently of wechatpay-go: the key
// named by the serial signed "ts\nnonce\nbody\n", and ts is in the window.
func genuine(k *wxpaysim.Keys, h http.Header, body []byte) string {
	pub := map[string]*rsa.PublicKey{k.PublicKeyID: k.PublicKey()}
	for _, c := range k.Certs {
		pub[c.Serial] = &c.Key.PublicKey
	}
	key, ok := pub[strings.TrimSpace(h.Get("Wechatpay-Serial"))]
	if !ok {
		return "unknown serial"
	}
	ts, err := strconv.ParseInt(strings.TrimSpace(h.Get("Wechatpay-Timestamp")), 10, 64)
	if err != nil {
		return "bad timestamp"
	}
	if d := time.Since(time.Unix(ts, 0)); d >= 5*time.Minute || -d >= 5*time.Minute {
		return "timestamp outside the window"
	}
	sig, err := base64.StdEncoding.DecodeString(h.Get("Wechatpay-Signature"))
	if err != nil {
		return "signature is not base64"
	}
	sum := sha256.Sum256([]byte(h.Get("Wechatpay-Timestamp") + "\n" + h.Get("Wechatpay-Nonce") + "\n" + string(body) + "\n"))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return "signature does not verify: " + err.Error()
	}
	return ""
}

// TestFuzzParseSeedsBehave checks that the valid seeds pass and the
// invalid ones fail, so the corpus really covers both sides.
func TestFuzzParseSeedsBehave(t *testing.T) {
	k := fuzzKeys(t)
	v := fuzzVerifier(t, k)
	for name, s := range fuzzSeeds(t, k, time.Now()) {
		h := http.Header{}
		h.Set("Wechatpay-Serial", s.serial)
		h.Set("Wechatpay-Signature", s.signature)
		h.Set("Wechatpay-Timestamp", s.timestamp)
		h.Set("Wechatpay-Nonce", s.nonce)
		_, err := v.Parse(context.Background(), h, s.body)
		if wantOK := strings.HasPrefix(name, "valid-"); (err == nil) != wantOK {
			t.Errorf("%s: err=%v, want ok=%v", name, err, wantOK)
		}
	}
}

// TestWriteFuzzCorpus regenerates testdata/fuzzkeys and the committed seed
// corpus when WXPAY_WRITE_FUZZ_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("WXPAY_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set WXPAY_WRITE_FUZZ_CORPUS=1 to regenerate the fuzz keys and corpus")
	}
	k, err := wxpaysim.GenerateKeys("1900000109", "wxd678efh567hg6787")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(fuzzKeysDir); err != nil {
		t.Fatal(err)
	}
	if err := k.WriteDir(fuzzKeysDir); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range fuzzSeeds(t, fuzzKeys(t), corpusTime) {
		entry := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nstring(%s)\nstring(%s)\nstring(%s)\nstring(%s)\n",
			strconv.Quote(string(s.body)), strconv.Quote(s.serial), strconv.Quote(s.signature),
			strconv.Quote(s.timestamp), strconv.Quote(s.nonce))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(entry), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
