package wechatpay_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"paygateway/gateway"
	"paygateway/gateway/internal/burst"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger/daytest"
)

// clientKeys are generated once: keys are immutable and RSA generation is slow.
var clientKeys = sync.OnceValues(func() (*wxpaysim.Keys, error) {
	return wxpaysim.GenerateKeys("1900000109", "wxd678efh567hg6787")
})

// clientEnv is a simulator served over loopback and a client pointed at it.
type clientEnv struct {
	sim    *wxpaysim.Sim
	client *wechatpay.Client
	keys   *wxpaysim.Keys
	url    string
}

// newClientEnv starts a simulator (refunds settle only on SettleRefunds) and
// a client; edit may change the client config.
func newClientEnv(t *testing.T, edit func(*wechatpay.ClientConfig)) *clientEnv {
	t.Helper()
	keys, err := clientKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	return startClientEnv(t, keys, wxpaysim.Options{RefundSettleDelay: -1}, edit)
}

// startClientEnv starts a simulator with opts and a client on keys; edit
// may change the client config.
func startClientEnv(t *testing.T, keys *wxpaysim.Keys, opts wxpaysim.Options, edit func(*wechatpay.ClientConfig)) *clientEnv {
	t.Helper()
	sim := wxpaysim.New(keys, opts)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close) // runs first: releases held connections
	cfg := clientConfig(keys, srv.URL)
	if edit != nil {
		edit(&cfg)
	}
	c, err := wechatpay.NewClient(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return &clientEnv{sim: sim, client: c, keys: keys, url: srv.URL}
}

func clientConfig(k *wxpaysim.Keys, baseURL string) wechatpay.ClientConfig {
	return wechatpay.ClientConfig{
		MchID: k.MchID, AppID: k.AppID, MerchantSerial: k.MerchantSerial, MerchantKey: k.MerchantKey,
		PublicKeyID: k.PublicKeyID, PublicKey: k.PublicKey(), BaseURL: baseURL, Timeout: 5 * time.Second,
	}
}

func (e *clientEnv) pay(t *testing.T, outTradeNo string, amount int64) wxpaysim.Transaction {
	t.Helper()
	tx, err := e.sim.Pay(context.Background(), outTradeNo, amount, "o-"+outTradeNo, true)
	if err != nil {
		t.Fatalf("Pay %s: %v", outTradeNo, err)
	}
	return tx
}

func refundReq(outTradeNo, outRefundNo string, amount, total int64) wechatpay.RefundRequest {
	return wechatpay.RefundRequest{OutTradeNo: outTradeNo, OutRefundNo: outRefundNo, Reason: "test", Amount: amount, Total: total}
}

func TestClientNewClientConfig(t *testing.T) {
	keys, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(*wechatpay.ClientConfig)
		wantErr bool
	}{
		{name: "production host, no network at construction", edit: func(c *wechatpay.ClientConfig) { c.BaseURL = "" }},
		{name: "base url with path", edit: func(c *wechatpay.ClientConfig) { c.BaseURL = "http://127.0.0.1:1/x" }, wantErr: true},
		{name: "base url without scheme", edit: func(c *wechatpay.ClientConfig) { c.BaseURL = "127.0.0.1:1" }, wantErr: true},
		{name: "no public key", edit: func(c *wechatpay.ClientConfig) { c.PublicKey = nil }, wantErr: true},
		{name: "no merchant key", edit: func(c *wechatpay.ClientConfig) { c.MerchantKey = nil }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clientConfig(keys, "http://127.0.0.1:1")
			tc.edit(&cfg)
			_, err := wechatpay.NewClient(context.Background(), cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err=%v, wantErr=%v", err, tc.wantErr)
			}
		})
	}
}

func TestClientQueryOrder(t *testing.T) {
	e := newClientEnv(t, nil)
	paid := e.pay(t, "PAID", 1234)
	if err := e.sim.RegisterOrder("UNPAID", 500); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, outTradeNo, wantState string
		wantTotal                   int64
		wantErr                     error
	}{
		{name: "unknown", outTradeNo: "NOPE", wantErr: wechatpay.ErrNotFound},
		{name: "unpaid", outTradeNo: "UNPAID", wantState: "NOTPAY", wantTotal: 500},
		{name: "paid", outTradeNo: "PAID", wantState: "SUCCESS", wantTotal: 1234},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := e.client.QueryOrder(context.Background(), tc.outTradeNo)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), "query order "+tc.outTradeNo) {
					t.Fatalf("err=%v, want %v with context", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("QueryOrder: %v", err)
			}
			if tx.TradeState != tc.wantState || tx.AmountTotal != tc.wantTotal || tx.MchID != e.keys.MchID {
				t.Fatalf("tx=%+v", tx)
			}
		})
	}
	tx, err := e.client.QueryOrder(context.Background(), "PAID")
	if err != nil {
		t.Fatal(err)
	}
	if tx.TransactionID != paid.TransactionID || tx.PayerOpenID != "o-PAID" || tx.PayerTotal != 1234 ||
		tx.Currency != "CNY" || tx.SuccessTime.IsZero() || tx.SuccessTime.Location() != time.UTC {
		t.Fatalf("paid tx=%+v", tx)
	}
}

func TestClientRefundCreateAndQuery(t *testing.T) {
	e := newClientEnv(t, nil)
	tx := e.pay(t, "T1", 100)
	ctx := context.Background()
	r, err := e.client.CreateRefund(ctx, refundReq("T1", "R1", 30, 100))
	if err != nil {
		t.Fatalf("CreateRefund: %v", err)
	}
	if r.Status != "PROCESSING" || r.Amount != 30 || r.Total != 100 || r.TransactionID != tx.TransactionID || r.RefundID == "" {
		t.Fatalf("refund=%+v", r)
	}
	e.sim.SettleRefunds()
	q, err := e.client.QueryRefund(ctx, "R1")
	if err != nil {
		t.Fatalf("QueryRefund: %v", err)
	}
	if q.Status != "SUCCESS" || q.RefundID != r.RefundID || q.SuccessTime.IsZero() || q.OutTradeNo != "T1" {
		t.Fatalf("queried=%+v", q)
	}
	if _, err := e.client.QueryRefund(ctx, "NOPE"); !errors.Is(err, wechatpay.ErrNotFound) {
		t.Fatalf("unknown refund: err=%v, want ErrNotFound", err)
	}
}

func TestClientRefundRepeatNeverRefundsTwice(t *testing.T) {
	e := newClientEnv(t, nil)
	e.pay(t, "T1", 100)
	ctx := context.Background()
	first, err := e.client.CreateRefund(ctx, refundReq("T1", "R1", 60, 100))
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.client.CreateRefund(ctx, refundReq("T1", "R1", 60, 100))
	if err != nil || again.RefundID != first.RefundID {
		t.Fatalf("repeat: %+v %v, want refund %s", again, err, first.RefundID)
	}
	if n := e.sim.RefundCount("R1"); n != 1 {
		t.Fatalf("RefundCount=%d, want 1", n)
	}
}

func TestClientRefundBusinessErrors(t *testing.T) {
	e := newClientEnv(t, nil)
	e.pay(t, "T1", 100)
	if err := e.sim.RegisterOrder("UNPAID", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CreateRefund(context.Background(), refundReq("T1", "R1", 60, 100)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		req        wechatpay.RefundRequest
		wantStatus int
		wantCode   string
		wantErr    error
	}{
		{name: "over refund", req: refundReq("T1", "R2", 41, 100), wantStatus: 400, wantCode: "INVALID_REQUEST"},
		{name: "same number other amount", req: refundReq("T1", "R1", 10, 100), wantStatus: 400, wantCode: "INVALID_REQUEST"},
		{name: "wrong total", req: refundReq("T1", "R3", 10, 99), wantStatus: 400, wantCode: "INVALID_REQUEST"},
		{name: "unpaid order", req: refundReq("UNPAID", "R4", 10, 100), wantErr: wechatpay.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.CreateRefund(context.Background(), tc.req)
			if wechatpay.IsUnknownOutcome(err) {
				t.Fatalf("err=%v is not a definite answer", err)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err=%v, want %v", err, tc.wantErr)
				}
				return
			}
			var be *wechatpay.BusinessError
			if !errors.As(err, &be) || be.Status != tc.wantStatus || be.Code != tc.wantCode || !be.Verified {
				t.Fatalf("err=%v, want %d %s signed by WeChat Pay", err, tc.wantStatus, tc.wantCode)
			}
			if !strings.Contains(err.Error(), "create refund "+tc.req.OutRefundNo) {
				t.Fatalf("err=%q lacks context", err)
			}
		})
	}
}

func TestClientFaults(t *testing.T) {
	tests := []struct {
		name      string
		faults    wxpaysim.Faults
		timeout   time.Duration
		wantCount int // refunds WeChat executed after the failed call
	}{
		{name: "5xx", faults: wxpaysim.Faults{Fail5xxNext: 1}, timeout: 5 * time.Second},
		{name: "drop", faults: wxpaysim.Faults{DropNext: 1}, timeout: 5 * time.Second},
		{name: "apply then timeout", faults: wxpaysim.Faults{ApplyThenTimeoutNext: 1}, timeout: time.Second, wantCount: 1},
		{name: "slow answer", faults: wxpaysim.Faults{Delay: 3 * time.Second}, timeout: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newClientEnv(t, func(c *wechatpay.ClientConfig) { c.Timeout = tc.timeout })
			e.pay(t, "T1", 100)
			e.sim.SetFaults(tc.faults)
			ctx := context.Background()
			_, err := e.client.CreateRefund(ctx, refundReq("T1", "R1", 10, 100))
			if !wechatpay.IsUnknownOutcome(err) || !strings.Contains(err.Error(), "create refund R1") {
				t.Fatalf("err=%v, want ErrUnknownOutcome with context", err)
			}
			if n := e.sim.RefundCount("R1"); n != tc.wantCount {
				t.Fatalf("RefundCount=%d, want %d", n, tc.wantCount)
			}
			e.sim.SetFaults(wxpaysim.Faults{})
			// The caller's recovery: query, then retry with the same out_refund_no.
			q, err := e.client.QueryRefund(ctx, "R1")
			if found := err == nil; found != (tc.wantCount == 1) {
				t.Fatalf("query after fault: %+v %v", q, err)
			}
			if err != nil && !errors.Is(err, wechatpay.ErrNotFound) {
				t.Fatalf("query after fault: err=%v, want ErrNotFound", err)
			}
			if _, err := e.client.CreateRefund(ctx, refundReq("T1", "R1", 10, 100)); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if n := e.sim.RefundCount("R1"); n != 1 {
				t.Fatalf("RefundCount after retry=%d, want 1", n)
			}
		})
	}
}

func TestClientVerifiesResponses(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := newClientEnv(t, func(c *wechatpay.ClientConfig) { c.PublicKey = &other.PublicKey })
	e.pay(t, "T1", 100)
	_, err = e.client.QueryOrder(context.Background(), "T1")
	if !errors.Is(err, wechatpay.ErrInvalidSignature) || !wechatpay.IsUnknownOutcome(err) {
		t.Fatalf("err=%v, want ErrInvalidSignature and ErrUnknownOutcome", err)
	}
}

func TestClientMerchantSignatureChecked(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := newClientEnv(t, func(c *wechatpay.ClientConfig) { c.MerchantKey = other })
	e.pay(t, "T1", 100)
	_, err = e.client.CreateRefund(context.Background(), refundReq("T1", "R1", 10, 100))
	var be *wechatpay.BusinessError
	// WeChat Pay does not sign it: no verdict the refund flow may act on.
	if !errors.As(err, &be) || be.Status != 401 || be.Code != "SIGN_ERROR" || be.Verified {
		t.Fatalf("err=%v, want an unsigned 401 SIGN_ERROR", err)
	}
	if n := e.sim.RefundCount("R1"); n != 0 {
		t.Fatalf("RefundCount=%d, want 0", n)
	}
}

func today() string {
	return time.Now().In(time.FixedZone("CST", 8*3600)).Format(time.DateOnly)
}

func TestClientTradeBill(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	e := newClientEnv(t, nil)
	t1, t2 := e.pay(t, "T1", 1000), e.pay(t, "T2", 250)
	r, err := e.client.CreateRefund(context.Background(), refundReq("T1", "R1", 300, 1000))
	if err != nil {
		t.Fatal(err)
	}
	bill, err := e.client.TradeBill(context.Background(), today())
	if err != nil {
		t.Fatalf("TradeBill: %v", err)
	}
	text := string(bill)
	for _, want := range []string{
		wxpaysim.BillHeader,
		"`" + t1.TransactionID + ",`T1,`o-T1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`10.00,",
		"`" + t2.TransactionID + ",`T2,`o-T2,`JSAPI,`SUCCESS,`OTHERS,`CNY,`2.50,",
		"`REFUND,`OTHERS,`CNY,`0.00,`0.00,`" + r.RefundID + ",`R1,`3.00,",
		wxpaysim.BillSummaryHeader + "\r\n`3,`12.50,`3.00,",
	} {
		if !strings.Contains(text, want) {
			t.Fatalf("bill lacks %q:\n%s", want, text)
		}
	}
}

// TestClientTradeBillTooLarge: a bill over the size the gateway holds is
// refused as gateway.ErrBillTooLarge, which the daily job retries a day
// later, not every few hours.
func TestClientTradeBillTooLarge(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	e := newClientEnv(t, nil)
	e.pay(t, "T1", 1000)
	defer wechatpay.SetMaxBillSize(100)()
	if _, err := e.client.TradeBill(context.Background(), today()); !errors.Is(err, gateway.ErrBillTooLarge) {
		t.Fatalf("err = %v, want ErrBillTooLarge", err)
	}
}

// TestBillDownloadErrorHidesTheToken: a download whose connection breaks
// fails without the link's token in its error (which is logged): Go's
// URL errors quote the whole address.
func TestBillDownloadErrorHidesTheToken(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	e := newClientEnv(t, nil)
	e.pay(t, "T1", 1000)
	e.sim.SetFaults(wxpaysim.Faults{PathPrefix: "/v3/billdownload/", DropNext: 5}) // net/http retries a GET once
	_, err := e.client.TradeBill(context.Background(), today())
	if err == nil || !wechatpay.IsUnknownOutcome(err) {
		t.Fatalf("err = %v, want the download's broken connection", err)
	}
	if strings.Contains(err.Error(), "token=") || !strings.Contains(err.Error(), "/v3/billdownload/file") {
		t.Fatalf("err = %v, want the download's address without its query", err)
	}
}

func TestClientTradeBillFaults(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	tests := []struct {
		name            string
		faults          wxpaysim.BillFaults
		want, wantNot   string
		wantHashFailure bool
	}{
		{name: "drop payment", faults: wxpaysim.BillFaults{DropOutTradeNo: "T1"}, wantNot: "`T1,", want: "`T2,"},
		{name: "change amount", faults: wxpaysim.BillFaults{ChangeAmount: map[string]int64{"T2": 1}},
			want: "`T2,`o-T2,`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.01,", wantNot: "`2.50,"},
		{name: "extra refund", faults: wxpaysim.BillFaults{ExtraRefund: &wxpaysim.BillRefund{OutTradeNo: "T2", OutRefundNo: "RX", Amount: 70}},
			want: "`RX,`0.70,", wantNot: "`R1,"},
		{name: "bad hash", faults: wxpaysim.BillFaults{BadHash: true}, wantHashFailure: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newClientEnv(t, nil)
			e.pay(t, "T1", 1000)
			e.pay(t, "T2", 250)
			e.sim.SetBillFaults(tc.faults)
			bill, err := e.client.TradeBill(context.Background(), today())
			if tc.wantHashFailure {
				if err == nil || !strings.Contains(err.Error(), "sha1") {
					t.Fatalf("err=%v, want sha1 mismatch", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("TradeBill: %v", err)
			}
			if !strings.Contains(string(bill), tc.want) || strings.Contains(string(bill), tc.wantNot) {
				t.Fatalf("bill (want %q, not %q):\n%s", tc.want, tc.wantNot, bill)
			}
			if len(e.sim.Refunds()) != 0 {
				t.Fatal("a bill fault moved money")
			}
		})
	}
}

func TestClientTradeBillNoStatement(t *testing.T) {
	e := newClientEnv(t, nil)
	_, err := e.client.TradeBill(context.Background(), "2020-01-01")
	var be *wechatpay.BusinessError
	if !errors.As(err, &be) || be.Code != "NO_STATEMENT_EXIST" {
		t.Fatalf("err=%v, want NO_STATEMENT_EXIST", err)
	}
}

// slowBills serves h, but sends a bill file's body in two halves with
// pause between them, as a big bill on a slow link arrives.
func slowBills(h http.Handler, pause time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v3/billdownload/file" {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		time.Sleep(pause)
		_, _ = w.Write(body[len(body)/2:])
	})
}

// TestClientTradeBillSlowDownload: the bill download has its own bound,
// longer than the per-call timeout, and still has one.
func TestClientTradeBillSlowDownload(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	keys, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		billTimeout time.Duration
		wantErr     bool
	}{
		{name: "longer than the call timeout", billTimeout: 10 * time.Second},
		{name: "default bound", billTimeout: 0},
		{name: "longer than the bill timeout", billTimeout: 300 * time.Millisecond, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := wxpaysim.New(keys, wxpaysim.Options{RefundSettleDelay: -1})
			srv := httptest.NewServer(slowBills(sim.Handler(), 800*time.Millisecond))
			t.Cleanup(srv.Close)
			t.Cleanup(sim.Close)
			cfg := clientConfig(keys, srv.URL)
			cfg.Timeout, cfg.BillTimeout = 400*time.Millisecond, tc.billTimeout
			c, err := wechatpay.NewClient(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sim.Pay(context.Background(), "T1", 1000, "o-T1", true); err != nil {
				t.Fatal(err)
			}
			bill, err := c.TradeBill(context.Background(), today())
			if tc.wantErr {
				if err == nil {
					t.Fatal("a download slower than bill_timeout succeeded")
				}
				return
			}
			if err != nil || !strings.Contains(string(bill), "`T1,") {
				t.Fatalf("TradeBill: %v\n%s", err, bill)
			}
		})
	}
}

// TestUnknownOutcomeIsLoggedWithTheRequestID: the warning of a call whose
// outcome is unknown carries the request id of the request that made it,
// so on-call can tie it to the refund request.
func TestUnknownOutcomeIsLoggedWithTheRequestID(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(gateway.NewLogHandler(slog.NewJSONHandler(&buf, nil)))
	e := newClientEnv(t, func(c *wechatpay.ClientConfig) { c.Logger = logger })
	e.sim.SetFaults(wxpaysim.Faults{Fail5xxNext: 1})
	ctx := gateway.WithRequestID(context.Background(), "req-unknown-1")
	if _, err := e.client.QueryRefund(ctx, "RF-none"); !wechatpay.IsUnknownOutcome(err) {
		t.Fatalf("query on a 5xx: err = %v, want an unknown outcome", err)
	}
	if !strings.Contains(buf.String(), `"msg":"wechatpay: outcome unknown"`) || !strings.Contains(buf.String(), `"request_id":"req-unknown-1"`) {
		t.Fatalf("log = %s, want the warning with the request id", buf.String())
	}
}

// TestClientUnsignedRefusal: a 4xx that WeChat Pay did not sign (a proxy
// that passed the call on, then answered 403 itself; or one signed with
// another key) is a BusinessError that is not Verified, though the
// refund was made.
func TestClientUnsignedRefusal(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, forge := range []bool{false, true} {
		e := newClientEnv(t, nil)
		e.pay(t, "T1", 100)
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			r.URL.Scheme, r.URL.Host, r.RequestURI = "", "", ""
			e.sim.Handler().ServeHTTP(rec, r) // WeChat Pay takes the call
			body := []byte(`{"code":"NO_AUTH","message":"blocked"}`)
			if forge {
				for k, v := range signedWith(t, other, e.keys.PublicKeyID, body) {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write(body)
		}))
		t.Cleanup(proxy.Close)
		cfg := clientConfig(e.keys, proxy.URL)
		c, err := wechatpay.NewClient(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.CreateRefund(context.Background(), refundReq("T1", "R1", 10, 100))
		var be *wechatpay.BusinessError
		if !errors.As(err, &be) || be.Status != 403 || be.Verified || !strings.Contains(err.Error(), "(unsigned)") {
			t.Fatalf("forged signature %t: err=%v, want an unverified 403", forge, err)
		}
		if n := e.sim.RefundCount("R1"); n != 1 {
			t.Fatalf("RefundCount=%d, want 1 (the proxy passed the call on)", n)
		}
	}
}

// signedWith returns WeChat Pay response headers for body signed by key.
func signedWith(t *testing.T, key *rsa.PrivateKey, serial string, body []byte) http.Header {
	t.Helper()
	ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), "forged-nonce"
	sum := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return http.Header{"Wechatpay-Timestamp": {ts}, "Wechatpay-Nonce": {nonce}, "Wechatpay-Serial": {serial},
		"Wechatpay-Signature": {base64.StdEncoding.EncodeToString(sig)}}
}

// TestClientKeepsConnectionsForABurst: after a burst of concurrent calls
// the client keeps its connections to WeChat Pay, so the next burst opens
// none (the default transport keeps 2 per host, and the rest would each
// cost a new TLS handshake on WeChat Pay's host).
func TestClientKeepsConnectionsForABurst(t *testing.T) {
	keys, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	sim := wxpaysim.New(keys, wxpaysim.Options{RefundSettleDelay: -1})
	t.Cleanup(sim.Close)
	const n = 8
	srv := burst.Start(t, sim.Handler(), n)
	c, err := wechatpay.NewClient(context.Background(), clientConfig(keys, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	first, again := srv.Rounds(n, func(int) {
		if _, err := c.QueryOrder(context.Background(), "NOPE"); !errors.Is(err, wechatpay.ErrNotFound) {
			t.Errorf("QueryOrder: %v, want not found", err)
		}
	})
	if first != n || again != 0 {
		t.Fatalf("first burst opened %d connections (want %d), the second %d more (want 0)", first, n, again)
	}
}

// TestHugeAnswersAreCutOff: an answer far over any of WeChat Pay's (a
// proxy's endless error page, a broken edge) is read no further than
// about 1 MiB, whatever its status, and is no verdict: outcome unknown.
func TestHugeAnswersAreCutOff(t *testing.T) {
	e := newClientEnv(t, nil)
	for _, status := range []int{http.StatusBadRequest, http.StatusOK} {
		var sent sync.WaitGroup
		var written int64
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sent.Add(1)
			defer sent.Done()
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"code":"X","message":"`))
			chunk := bytes.Repeat([]byte("a"), 64<<10)
			for range 1024 { // 64 MiB
				n, err := w.Write(chunk)
				written += int64(n)
				if err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}))
		c, err := wechatpay.NewClient(context.Background(), clientConfig(e.keys, server.URL))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.QueryOrder(context.Background(), "T1")
		server.CloseClientConnections()
		sent.Wait()
		server.Close()
		if !wechatpay.IsUnknownOutcome(err) || !strings.Contains(err.Error(), "over 1 MiB") {
			t.Errorf("status %d: err = %v, want an unknown outcome, the answer over 1 MiB", status, err)
		}
		if written > 16<<20 {
			t.Errorf("status %d: the client took %d MiB of the answer, want it cut off near 1 MiB", status, written>>20)
		}
	}
}

// TestClientUnsignedNotFoundIsLogged: a 404 "not found" WeChat Pay did not
// sign is still ErrNotFound (see the README on why), and logged at warn, so
// that a proxy answering in WeChat Pay's name shows, at most once a minute;
// a signed one is not.
func TestClientUnsignedNotFoundIsLogged(t *testing.T) {
	e := newClientEnv(t, nil)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "UNSIGNED") {
			r.URL.Scheme, r.URL.Host, r.RequestURI = "", "", ""
			e.sim.Handler().ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"code":"ORDER_NOT_EXIST","message":"not found"}`))
	}))
	t.Cleanup(proxy.Close)
	var logs bytes.Buffer
	cfg := clientConfig(e.keys, proxy.URL)
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	c, err := wechatpay.NewClient(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"SIGNED", "UNSIGNED", "UNSIGNED-AGAIN"} {
		if _, err := c.QueryOrder(context.Background(), no); !errors.Is(err, wechatpay.ErrNotFound) {
			t.Fatalf("%s: err=%v, want ErrNotFound", no, err)
		}
	}
	if n := strings.Count(logs.String(), "not found, unsigned"); n != 1 || !strings.Contains(logs.String(), `"key":"UNSIGNED"`) {
		t.Fatalf("%d warnings, want one, for the unsigned answer:\n%s", n, logs.String())
	}
}

// TestClientFollowsNoRedirect: an answer that redirects (WeChat Pay's API
// never does) is an unknown outcome, not the verdict of wherever it points:
// a followed 302 would turn a refund's POST into a GET of another page,
// whose "not found" (believed unsigned) would then pass for WeChat Pay's.
func TestClientFollowsNoRedirect(t *testing.T) {
	keys, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	var followed sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Store(r.Method, true)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code":"RESOURCE_NOT_EXISTS","message":"not here"}`))
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	c, err := wechatpay.NewClient(context.Background(), clientConfig(keys, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for what, call := range map[string]func() error{
		"create refund": func() error { _, err := c.CreateRefund(ctx, refundReq("T1", "R1", 10, 100)); return err },
		"query refund":  func() error { _, err := c.QueryRefund(ctx, "R1"); return err },
		"close order":   func() error { return c.CloseOrder(ctx, "T1") },
		"query order":   func() error { _, err := c.QueryOrder(ctx, "T1"); return err },
	} {
		if err := call(); !wechatpay.IsUnknownOutcome(err) || errors.Is(err, wechatpay.ErrNotFound) {
			t.Errorf("%s redirected: err=%v, want an unknown outcome, not ErrNotFound", what, err)
		}
	}
	followed.Range(func(m, _ any) bool {
		t.Errorf("the client followed a redirect (%s /elsewhere)", m)
		return true
	})
}

// TestOversizedAnswerHeadersAreUnknown: an answer whose headers run past
// 64 KiB (WeChat Pay's take a few hundred bytes) ends the call as an
// unknown outcome; before, net/http read up to 10 MiB of them on each of
// 64 calls at once, and the answer, an unsigned "not found" here, was
// believed.
func TestOversizedAnswerHeadersAreUnknown(t *testing.T) {
	keys, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Padding", strings.Repeat("p", 1<<20))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"code":"ORDER_NOT_EXIST","message":"no such order"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := wechatpay.NewClient(context.Background(), clientConfig(keys, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueryOrder(context.Background(), "T1"); !wechatpay.IsUnknownOutcome(err) || errors.Is(err, wechatpay.ErrNotFound) {
		t.Fatalf("query answered with 1 MiB of headers: err=%v, want an unknown outcome", err)
	}
}

// TestLongAnswersAreCutInErrorsAndLogs: what an answer says about a
// failure (its code and message, its Request-ID header) is cut in the
// error and the warning logged, however long it came: an error page
// under 1 MiB (a proxy's or a WAF's, one echoing the request) would
// otherwise be logged whole at each call, by every refund and order check
// that meets it, and held so in the log's queue of 8,192 lines.
func TestLongAnswersAreCutInErrorsAndLogs(t *testing.T) {
	const maxText = 2048
	e := newClientEnv(t, nil)
	// WeChat Pay's messages are Chinese: a cut must fall between
	// characters (512 and 64 bytes fall inside one here), or the refusal
	// kept in the ledger's last_error is not UTF-8.
	long := strings.Repeat("余", 512<<10/3)
	for _, status := range []int{http.StatusInternalServerError, http.StatusForbidden, http.StatusOK} {
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Request-Id", strings.Repeat("r", 16<<10)) // under the 64 KiB of headers taken
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"code":"SYSTEM_ERROR` + long[:4095] + `","message":"` + long + `"}`))
		}))
		var logs bytes.Buffer
		cfg := clientConfig(e.keys, server.URL)
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		c, err := wechatpay.NewClient(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.QueryOrder(context.Background(), "T1")
		server.Close()
		if err == nil {
			t.Fatalf("status %d: no error", status)
		}
		if n := len(err.Error()); n > maxText {
			t.Errorf("status %d: the error is %d bytes, want at most %d", status, n, maxText)
		}
		if !utf8.ValidString(err.Error()) {
			t.Errorf("status %d: the error is cut inside a character: %q", status, err.Error())
		}
		var be *wechatpay.BusinessError
		if errors.As(err, &be) && len(be.Message)+len(be.Code)+len(be.RequestID) > maxText {
			t.Errorf("status %d: the refusal keeps %d bytes of the answer, want at most %d", status,
				len(be.Message)+len(be.Code)+len(be.RequestID), maxText)
		}
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			if len(line) > 2*maxText {
				t.Errorf("status %d: a log line of %d bytes: %.200s…", status, len(line), line)
			}
		}
	}
}
