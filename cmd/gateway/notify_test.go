package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

const paymentPath = "/v1/wechatpay/notify/payment"

func TestPaymentNotificationRecordedOnce(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			no := uniqueNo("pay")
			n := mustNotification(k.PaymentNotification(paidTx(k, no, 1999), wxpaysim.PublicKeyMode(), time.Now()))
			if status, body := post(t, m.URL()+paymentPath, n); status != 204 {
				t.Fatalf("status=%d body=%v, want 204", status, body)
			}
			again := mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
			if status, _ := post(t, m.URL()+paymentPath, again); status != 204 {
				t.Fatalf("redelivery status=%d, want 204", status)
			}
			if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 1} {
				t.Fatalf("payments/history/notifications = %v, want [1 1 1]", got)
			}
			status, body := apiCall(t, "GET", m.URL()+"/v1/ledger/payments/"+no, financeKey, nil)
			p, _ := body["payment"].(map[string]any)
			if status != 200 || p["state"] != "SUCCESS" || p["amount_total"] != float64(1999) {
				t.Fatalf("ledger read: status=%d body=%v", status, body)
			}
		})
	}
}

// TestConcurrentDuplicateCallbacks fires 100 deliveries of one notification
// (each signed afresh, as WeChat redelivers) at the same moment.
func TestConcurrentDuplicateCallbacks(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			no := uniqueNo("dup")
			first := mustNotification(k.PaymentNotification(paidTx(k, no, 500), wxpaysim.PublicKeyMode(), time.Now()))
			copies := make([]wxpaysim.Notification, 100)
			for i := range copies {
				mode := wxpaysim.PublicKeyMode()
				if i%3 == 1 {
					mode = wxpaysim.CertMode(i % 2)
				}
				copies[i] = mustNotification(first.Resign(k, mode, time.Now()))
			}
			fireAll(t, m, copies)
			assertRecordedOnce(t, m, no)
		})
	}
}

func fire(t *testing.T, url string, ns []wxpaysim.Notification) []int {
	statuses := make([]int, len(ns))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range ns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			resp, err := ns[i].Post(t.Context(), httpClient, url)
			if err != nil {
				t.Errorf("delivery %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}(i)
	}
	close(start)
	wg.Wait()
	return statuses
}

// badCase builds a notification for order no that the gateway must refuse.
type badCase struct {
	name   string
	build  func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification
	status int
	reason string
}

func badCases() []badCase {
	return []badCase{
		{"forged signature", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			n := good(t, k, no)
			other, _ := rsa.GenerateKey(rand.Reader, 2048)
			msg := n.Header.Get("Wechatpay-Timestamp") + "\n" + n.Header.Get("Wechatpay-Nonce") + "\n" + string(n.Body) + "\n"
			sig, _ := utils.SignSHA256WithRSA(msg, other)
			n.Header.Set("Wechatpay-Signature", sig)
			return n
		}, 401, "ESIGNATURE"},
		{"signature probe", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			n := good(t, k, no)
			n.Header.Set("Wechatpay-Signature", "WECHATPAY/SIGNTEST/"+base64.StdEncoding.EncodeToString([]byte("x")))
			return n
		}, 401, "ESIGNATURE"},
		{"unknown serial", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			n := good(t, k, no)
			n.Header.Set("Wechatpay-Serial", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
			return n
		}, 401, "ESIGNATURE"},
		{"missing signature header", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			n := good(t, k, no)
			n.Header.Del("Wechatpay-Signature")
			return n
		}, 401, "ESIGNATURE"},
		{"stale timestamp", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			return mustNotification(k.PaymentNotification(paidTx(k, no, 100), wxpaysim.PublicKeyMode(), time.Now().Add(-6*time.Minute)))
		}, 401, "ESTALE"},
		{"future timestamp", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			return mustNotification(k.PaymentNotification(paidTx(k, no, 100), wxpaysim.PublicKeyMode(), time.Now().Add(6*time.Minute)))
		}, 401, "ESTALE"},
		{"body tampered after signing", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			n := good(t, k, no)
			n.Body = bytes.Replace(n.Body, []byte(`"ciphertext":"`), []byte(`"ciphertext":"AAAA`), 1)
			return n
		}, 401, "ESIGNATURE"},
		{"tampered ciphertext, validly signed", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			n := good(t, k, no)
			n.Body = flipCiphertext(t, n.Body)
			return mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
		}, 400, "EDECRYPT"},
		{"wrong APIv3 key", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			wrong := *k
			wrong.APIv3Key = strings.Repeat("k", 32)
			return mustNotification(wrong.PaymentNotification(paidTx(k, no, 100), wxpaysim.PublicKeyMode(), time.Now()))
		}, 400, "EDECRYPT"},
		{"wrong mchid", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			tx := paidTx(k, no, 100)
			tx.MchID = "1900009999"
			return mustNotification(k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))
		}, 400, "EMERCHANT"},
		{"wrong appid", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			tx := paidTx(k, no, 100)
			tx.AppID = "wxsomeoneelse0001"
			return mustNotification(k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))
		}, 400, "EMERCHANT"},
		{"malformed JSON body", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			n := good(t, k, no)
			n.Body = []byte(`{"id": "x", "resource": `)
			return mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
		}, 400, "EINVALID"},
		{"malformed plaintext", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			return mustNotification(k.NewNotification("id-"+no, "TRANSACTION.SUCCESS", "transaction",
				[]byte(`{"out_trade_no": `), wxpaysim.PublicKeyMode(), time.Now()))
		}, 400, "EINVALID"},
		{"oversized body", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			tx := paidTx(k, no, 100)
			tx.Attach = strings.Repeat("a", 70<<10)
			return mustNotification(k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))
		}, 413, "ETOO_LARGE"},
		{"zero amount", func(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
			return mustNotification(k.PaymentNotification(paidTx(k, no, 0), wxpaysim.PublicKeyMode(), time.Now()))
		}, 400, "EINVALID"},
	}
}

func good(t *testing.T, k *wxpaysim.Keys, no string) wxpaysim.Notification {
	return mustNotification(k.PaymentNotification(paidTx(k, no, 100), wxpaysim.PublicKeyMode(), time.Now()))
}

func flipCiphertext(t *testing.T, body []byte) []byte {
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	res := env["resource"].(map[string]any)
	ct, _ := base64.StdEncoding.DecodeString(res["ciphertext"].(string))
	ct[len(ct)/2] ^= 0x01
	res["ciphertext"] = base64.StdEncoding.EncodeToString(ct)
	out, _ := json.Marshal(env)
	return out
}

// tableCounts counts every row of payments, state_history and
// notifications, whatever order they are for.
func tableCounts(t *testing.T, m *Main) [3]int64 {
	t.Helper()
	var out [3]int64
	for i, table := range []string{"payments", "state_history", "notifications"} {
		if err := m.Store.DB().Table(table).Count(&out[i]).Error; err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestBadNotificationsLeaveNoTrace checks each bad input is refused with
// WeChat's FAIL answer and a stable reason, and nothing is recorded.
func TestBadNotificationsLeaveNoTrace(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			for _, tc := range badCases() {
				t.Run(tc.name, func(t *testing.T) {
					no := uniqueNo("bad")
					before := tableCounts(t, m)
					status, body := post(t, m.URL()+paymentPath, tc.build(t, k, no))
					if status != tc.status || body["code"] != "FAIL" || body["reason"] != tc.reason {
						t.Fatalf("status=%d body=%v, want %d FAIL/%s", status, body, tc.status, tc.reason)
					}
					if got := ledgerCounts(t, m, no); got != [3]int64{} {
						t.Fatalf("ledger rows = %v, want none", got)
					}
					// Some cases never name no (a malformed body), so a row
					// under another order would pass the check above.
					if after := tableCounts(t, m); after != before {
						t.Fatalf("rows in payments/state_history/notifications went from %v to %v", before, after)
					}
				})
			}
		})
	}
}

// TestForgeryOfACommittedNotificationIsRefused: a notification already
// recorded is no free pass. Its body sent again under a forger's
// signature, and a forged one for the same paid order, are refused as
// forged (not answered 204 as a redelivery) and change nothing.
func TestForgeryOfACommittedNotificationIsRefused(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			no := uniqueNo("fc")
			n := good(t, k, no)
			if status, _ := post(t, m.URL()+paymentPath, n); status != 204 {
				t.Fatalf("genuine delivery status=%d", status)
			}
			other, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			sameBody := signedBy(t, n, other)
			forgedOrder := signedBy(t, mustNotification(k.PaymentNotification(paidTx(k, no, 1), wxpaysim.PublicKeyMode(), time.Now())), other)
			for name, f := range map[string]wxpaysim.Notification{"the recorded body": sameBody, "another body": forgedOrder} {
				if status, body := post(t, m.URL()+paymentPath, f); status != 401 || body["reason"] != "ESIGNATURE" {
					t.Fatalf("%s under a forged signature: status=%d body=%v, want 401 ESIGNATURE", name, status, body)
				}
			}
			if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 1} {
				t.Fatalf("payments/history/notifications = %v, want [1 1 1]", got)
			}
		})
	}
}

// signedBy returns n with a fresh nonce and timestamp, signed by key.
func signedBy(t *testing.T, n wxpaysim.Notification, key *rsa.PrivateKey) wxpaysim.Notification {
	t.Helper()
	out := n
	out.Header = n.Header.Clone()
	ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), uniqueNo("nonce")
	sig, err := utils.SignSHA256WithRSA(ts+"\n"+nonce+"\n"+string(n.Body)+"\n", key)
	if err != nil {
		t.Fatal(err)
	}
	out.Header.Set("Wechatpay-Timestamp", ts)
	out.Header.Set("Wechatpay-Nonce", nonce)
	out.Header.Set("Wechatpay-Signature", sig)
	return out
}

func TestReplayedNonceRefused(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			replayedNo, no := uniqueNo("rp"), uniqueNo("rp")
			first := good(t, k, no)
			if status, _ := post(t, m.URL()+paymentPath, first); status != 204 {
				t.Fatalf("first delivery status=%d", status)
			}
			// Same headers (nonce), other body: a captured nonce reused.
			replay := good(t, k, replayedNo)
			replay.Header = first.Header.Clone()
			if status, body := post(t, m.URL()+paymentPath, replay); status != 401 || body["reason"] != "EREPLAY" && body["reason"] != "ESIGNATURE" {
				t.Fatalf("replay with other body: status=%d body=%v", status, body)
			}
			if status, body := post(t, m.URL()+paymentPath, first); status != 401 || body["reason"] != "EREPLAY" {
				t.Fatalf("exact replay: status=%d body=%v, want 401 EREPLAY", status, body)
			}
			// The SDK verifies the trimmed nonce, so trailing Unicode space
			// keeps the signature valid: the replay check must see through it.
			for _, pad := range []string{"\u00a0", "\u0085", " "} {
				padded := first
				padded.Header = first.Header.Clone()
				padded.Header.Set("Wechatpay-Nonce", first.Header.Get("Wechatpay-Nonce")+pad)
				if status, body := post(t, m.URL()+paymentPath, padded); status != 401 || body["reason"] != "EREPLAY" {
					t.Fatalf("replay with nonce+%q: status=%d body=%v, want 401 EREPLAY", pad, status, body)
				}
			}
			if got := ledgerCounts(t, m, replayedNo); got != [3]int64{} {
				t.Fatalf("replayed order rows = %v, want none", got)
			}
			// WeChat Pay signing a redelivery anew with the same nonce is no
			// replay: the signature covers another timestamp.
			resent := first
			resent.Header = first.Header.Clone()
			ts := strconv.FormatInt(time.Now().Unix()-30, 10)
			sig, err := utils.SignSHA256WithRSA(ts+"\n"+first.Header.Get("Wechatpay-Nonce")+"\n"+string(first.Body)+"\n", k.PlatformKey)
			if err != nil {
				t.Fatal(err)
			}
			resent.Header.Set("Wechatpay-Timestamp", ts)
			resent.Header.Set("Wechatpay-Signature", sig)
			if status, body := post(t, m.URL()+paymentPath, resent); status != 204 {
				t.Fatalf("redelivery signed anew with the same nonce: status=%d body=%v, want 204", status, body)
			}
			if status, body := post(t, m.URL()+paymentPath, resent); status != 401 || body["reason"] != "EREPLAY" {
				t.Fatalf("replay of that redelivery: status=%d body=%v, want 401 EREPLAY", status, body)
			}
		})
	}
}

// TestVerificationModes: public key, either of two live platform
// certificates (rotation), and a gateway configured with only one kind.
func TestVerificationModes(t *testing.T) {
	k, _ := testKeys(t)
	both := testConfig(t, backends[0])
	m := startGateway(t, both)
	for _, mode := range []wxpaysim.SignMode{wxpaysim.PublicKeyMode(), wxpaysim.CertMode(0), wxpaysim.CertMode(1)} {
		no := uniqueNo("mode")
		n := mustNotification(k.PaymentNotification(paidTx(k, no, 300), mode, time.Now()))
		if status, body := post(t, m.URL()+paymentPath, n); status != 204 {
			t.Fatalf("mode %+v: status=%d body=%v", mode, status, body)
		}
	}
	certsOnly := testConfig(t, backends[0])
	certsOnly.WechatPay.PublicKeyFile, certsOnly.WechatPay.PublicKeyID = "", ""
	keyOnly := testConfig(t, backends[0])
	keyOnly.WechatPay.PlatformCertFiles = nil
	cases := []struct {
		name   string
		cfg    Config
		mode   wxpaysim.SignMode
		status int
	}{
		{"certs only accepts cert", certsOnly, wxpaysim.CertMode(1), 204},
		{"certs only refuses public key", certsOnly, wxpaysim.PublicKeyMode(), 401},
		{"key only accepts public key", keyOnly, wxpaysim.PublicKeyMode(), 204},
		{"key only refuses cert", keyOnly, wxpaysim.CertMode(0), 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, tc.cfg)
			n := mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("only"), 300), tc.mode, time.Now()))
			if status, body := post(t, g.URL()+paymentPath, n); status != tc.status {
				t.Fatalf("status=%d body=%v, want %d", status, body, tc.status)
			}
		})
	}
}

// TestOurMisconfigurationIsAnError: a notification WeChat Pay signed that
// our APIv3 key cannot open, or that names another merchant, is logged at
// error level (every genuine callback is being refused until someone
// fixes the config); a forged signature stays at info.
func TestOurMisconfigurationIsAnError(t *testing.T) {
	logs := captureLogs(t)
	m := startGateway(t, testConfig(t, backends[0]))
	k, _ := testKeys(t)
	want := map[string]string{"wrong APIv3 key": "ERROR", "wrong mchid": "ERROR", "forged signature": "INFO"}
	for _, tc := range badCases() {
		if _, ok := want[tc.name]; ok {
			post(t, m.URL()+paymentPath, tc.build(t, k, uniqueNo("lvl")))
		}
	}
	got := map[string]string{}
	for _, l := range logLines(t, logs.String(), "request failed") {
		got[fmt.Sprint(l["code"])] = fmt.Sprint(l["level"])
	}
	for name, level := range map[string]string{"EDECRYPT": "ERROR", "EMERCHANT": "ERROR", "ESIGNATURE": "INFO"} {
		if got[name] != level {
			t.Errorf("%s logged at %q, want %s (all: %v)", name, got[name], level, got)
		}
	}
}

// TestSignedRefusalsAreErrors: a notification WeChat Pay signed that the
// gateway refuses anyway is sent again for 24 hours and refused each time,
// so it is logged at error level: one in a currency other than CNY
// (409; one of another amount than registered is recorded, not refused),
// one on the wrong endpoint (a refund notice at the payment route: 400).
func TestSignedRefusalsAreErrors(t *testing.T) {
	logs := captureLogs(t)
	m := startGateway(t, testConfig(t, backends[0]))
	k, _ := testKeys(t)
	no := uniqueNo("lvl-amt")
	if _, err := m.Store.RegisterOrder(context.Background(), ledger.Order{OutTradeNo: no, AmountTotal: 300,
		ExpireAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	usd := paidTx(k, no, 300)
	usd.Amount.Currency = "USD"
	if status, body := post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(usd,
		wxpaysim.PublicKeyMode(), time.Now()))); status != 409 {
		t.Fatalf("paid in USD: status=%d body=%v, want 409", status, body)
	}
	rn := wxpaysim.RefundNotice{MchID: k.MchID, OutTradeNo: no, TransactionID: "42000" + no, OutRefundNo: "R" + no,
		RefundID: "50" + no, RefundStatus: "CLOSED", Amount: wxpaysim.RefundNoticeAmount{Total: 300, Refund: 10,
			PayerTotal: 300, PayerRefund: 10}}
	if status, body := post(t, m.URL()+paymentPath, mustNotification(k.RefundNotification(rn, wxpaysim.PublicKeyMode(),
		time.Now()))); status != 400 {
		t.Fatalf("refund notice at the payment route: status=%d body=%v, want 400", status, body)
	}
	lines := logLines(t, logs.String(), "request failed")
	levels := map[string]string{}
	for _, l := range lines {
		levels[fmt.Sprint(l["code"])] = fmt.Sprint(l["level"])
	}
	if levels["ECONFLICT"] != "ERROR" || levels["EINVALID"] != "ERROR" || len(lines) != 2 {
		t.Fatalf("refusals logged at %v (%d lines), want ECONFLICT and EINVALID at ERROR", levels, len(lines))
	}
}
