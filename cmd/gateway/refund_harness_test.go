package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

const refundNotifyPath = "/v1/wechatpay/notify/refund"

// jwtSecret signs user tokens in tests.
var jwtSecret = "jwt-test-secret-" + gateway.NewToken()

const jwtAudience = "refunds-test"

// refundEnv is a gateway wired to a WeChat Pay simulator.
type refundEnv struct {
	m   *Main
	sim *wxpaysim.Sim
	k   *wxpaysim.Keys
}

// startRefundEnv starts a simulator (refunds settle only on SettleRefunds,
// no automatic notifications) and a gateway pointed at it.
func startRefundEnv(t testing.TB, b backend, tweak func(*Config)) *refundEnv {
	t.Helper()
	return startRefundEnvSim(t, b, wxpaysim.Options{RefundSettleDelay: -1, NotifyRetryDelays: []time.Duration{}}, tweak)
}

// startRefundEnvSim is startRefundEnv with the simulator's options.
func startRefundEnvSim(t testing.TB, b backend, opts wxpaysim.Options, tweak func(*Config)) *refundEnv {
	t.Helper()
	k, dir := testKeys(t)
	sim := wxpaysim.New(k, opts)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close) // runs first: releases connections held by faults
	cfg := testConfig(t, b)
	w := &cfg.WechatPay
	w.BaseURL, w.MerchantSerial = srv.URL, k.MerchantSerial
	w.MerchantPrivateKeyFile = filepath.Join(dir, "merchant_private_key.pem")
	w.Timeout = 2 * time.Second
	cfg.Refunds.JWT.HS256Secret, cfg.Refunds.JWT.Audience = jwtSecret, jwtAudience
	cfg.Refunds.JanitorInterval = time.Hour // tests sweep by hand
	// This simulator takes refunds of one order back to back (no
	// RefundGap), and so does the gateway here; TestRefundsOfOneOrderAreSpaced
	// runs both with the gap.
	cfg.Refunds.OrderGap = time.Nanosecond
	cfg.Finance.DailyReconcileAt = "off" // it reconciles past days on start; tested in gateway
	if tweak != nil {
		tweak(&cfg)
	}
	return &refundEnv{m: startGateway(t, cfg), sim: sim, k: k}
}

// pay makes the simulator take payment of a new order from openid and
// delivers the TRANSACTION.SUCCESS notification to the gateway.
func (e *refundEnv) pay(t testing.TB, openid string, amount int64) string {
	t.Helper()
	no := uniqueNo("rfo")
	tx, err := e.sim.Pay(context.Background(), no, amount, openid, true)
	if err != nil {
		t.Fatalf("sim pay: %v", err)
	}
	n := mustNotification(e.k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))
	if status, body := post(t, e.m.URL()+paymentPath, n); status != 204 {
		t.Fatalf("payment notification: status=%d body=%v", status, body)
	}
	return no
}

func token(t testing.TB, openid string) string {
	t.Helper()
	tok, err := gateway.SignDevToken([]byte(jwtSecret), openid, "", jwtAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// answer is a raw HTTP answer.
type answer struct {
	status int
	body   []byte
	header http.Header
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("status %d, body not JSON: %q", a.status, a.body)
	}
	return m
}

// refund calls POST /v1/refunds; an empty tok or key leaves the header out.
func (e *refundEnv) refund(t testing.TB, tok, key string, body any) answer {
	t.Helper()
	var raw []byte
	if s, ok := body.(string); ok {
		raw = []byte(s)
	} else {
		raw, _ = json.Marshal(body)
	}
	req, _ := http.NewRequest("POST", e.m.URL()+"/v1/refunds", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return do(t, req)
}

func (e *refundEnv) getRefund(t *testing.T, tok, outRefundNo string) answer {
	t.Helper()
	req, _ := http.NewRequest("GET", e.m.URL()+"/v1/refunds/"+outRefundNo, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return do(t, req)
}

func do(t testing.TB, req *http.Request) answer {
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", req.Method, req.URL, err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b, header: resp.Header}
}

func refundBody(no string, amount int64) map[string]any {
	return map[string]any{"out_trade_no": no, "amount": amount, "reason": "test"}
}

// refundRows counts the refunds and idempotency keys the ledger holds.
func refundRows(t *testing.T, m *Main, outTradeNo string) (refunds, keys int64) {
	t.Helper()
	db := m.Store.DB()
	if err := db.Table("refunds").Where("out_trade_no = ?", outTradeNo).Count(&refunds).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Table("idempotency_keys").Count(&keys).Error; err != nil {
		t.Fatal(err)
	}
	return refunds, keys
}

func ledgerRefund(t *testing.T, m *Main, outRefundNo string) *ledger.Refund {
	t.Helper()
	r, err := m.Store.Refund(context.Background(), outRefundNo)
	if err != nil {
		t.Fatalf("read refund %s: %v", outRefundNo, err)
	}
	return r
}

// refundNotice posts a signed REFUND.<status> notification for r.
func (e *refundEnv) refundNotice(t *testing.T, r *ledger.Refund, status string) (int, wxpaysim.Notification) {
	t.Helper()
	rn := wxpaysim.RefundNotice{MchID: e.k.MchID, OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID,
		OutRefundNo: r.OutRefundNo, RefundID: "50" + r.OutRefundNo, RefundStatus: status,
		Amount: wxpaysim.RefundNoticeAmount{Total: r.Total, Refund: r.Amount, PayerTotal: r.Total, PayerRefund: r.Amount}}
	if status == "SUCCESS" {
		rn.SuccessTime = time.Now().Format(time.RFC3339)
	}
	n := mustNotification(e.k.RefundNotification(rn, wxpaysim.PublicKeyMode(), time.Now()))
	code, body := post(t, e.m.URL()+refundNotifyPath, n)
	if code != 204 {
		t.Logf("refund notice %s: status=%d body=%v", status, code, body)
	}
	return code, n
}
