package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/redisstore/redistest"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger/ledgertest"
)

var (
	keysOnce   sync.Once
	sharedKeys *wxpaysim.Keys
	keysDir    string
)

// testKeys generates one set of throwaway keys per test binary.
func testKeys(t testing.TB) (*wxpaysim.Keys, string) {
	t.Helper()
	keysOnce.Do(func() {
		k, err := wxpaysim.GenerateKeys("1900000109", "wxtestappid000001")
		if err != nil {
			panic(err)
		}
		dir, err := os.MkdirTemp("", "gwkeys")
		if err != nil {
			panic(err)
		}
		if err := k.WriteDir(dir); err != nil {
			panic(err)
		}
		sharedKeys, keysDir = k, dir
	})
	return sharedKeys, keysDir
}

// Test API keys (generated per run; only their hashes go into config).
var (
	serviceKey = "svc-" + gateway.NewToken()
	financeKey = "fin-" + gateway.NewToken()
	opsKey     = "ops-" + gateway.NewToken()
	metricsKey = "met-" + gateway.NewToken()
)

type backend struct {
	name  string
	mysql bool
	redis bool
}

// tag is the backend's name as it may appear in an openid ("mysql-redis").
func (b backend) tag() string { return strings.ReplaceAll(b.name, "+", "-") }

var backends = []backend{{name: "sqlite"}, {name: "mysql+redis", mysql: true, redis: true}}

// testConfig builds a config for a gateway on ":0" using the test keys.
func testConfig(t testing.TB, b backend) Config {
	t.Helper()
	k, dir := testKeys(t)
	cfg := DefaultConfig()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Log.Level = "error"
	// The longest answer time WeChat Pay's wait allows (the default is
	// 4 s): a burst of deliveries shares it, and race-enabled gateways
	// beside other test packages on two loaded cores were seen needing
	// more than 4 s for 300 at once (every one answered 503).
	cfg.HTTP.NotifyTimeout = maxNotifyTimeout
	cfg.RateLimit = RateLimitConfig{} // off; the rate limit tests set their own
	// Off too: tests of the key-check bulkhead send floods of unknown keys
	// from one address. TestWrongKeysLockTheAddressOut sets its own.
	cfg.Auth.FailedKeysPerMinute = 0
	// Migrated already (the gateway finds nothing to apply): migrating a
	// new SQLite database takes half a second under -race. The MySQL ones,
	// and the processes' (instanceEnv), start empty.
	if b.mysql {
		cfg.Database.DSN = ledgertest.MySQLDSN(t)
	} else {
		cfg.Database.DSN = ledgertest.SQLiteCopyDSN(t)
	}
	if b.redis {
		rc := redistest.Config(t)
		cfg.Redis.Addr, cfg.Redis.Prefix = rc.Addr, rc.Prefix
	}
	w := &cfg.WechatPay
	w.MchID, w.AppID, w.APIv3Key = k.MchID, k.AppID, k.APIv3Key
	w.PublicKeyFile, w.PublicKeyID = filepath.Join(dir, "platform_public_key.pem"), k.PublicKeyID
	for _, c := range k.Certs {
		w.PlatformCertFiles = append(w.PlatformCertFiles, filepath.Join(dir, "platform_cert_"+c.Serial+".pem"))
	}
	cfg.Auth.APIKeys = []string{"svc:service:" + gateway.HashKey(serviceKey),
		"fin:finance:" + gateway.HashKey(financeKey), "ops:ops:" + gateway.HashKey(opsKey),
		"prom:metrics:" + gateway.HashKey(metricsKey)}
	return cfg
}

// startGateway runs a gateway until the test ends.
func startGateway(t testing.TB, cfg Config) *Main {
	t.Helper()
	return startGatewayWith(t, cfg, nil)
}

// startRefused starts a gateway on cfg and fails t unless the start is
// refused with an error naming want; it returns that error.
func startRefused(t *testing.T, cfg Config, want string) error {
	t.Helper()
	m, err := NewMain(context.Background(), cfg)
	if err == nil {
		m.Close()
		t.Fatalf("started; want a refusal naming %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("start refused with %v; want it to name %q", err, want)
	}
	return err
}

// startGatewayWith is startGateway with before run on the new Main before
// it starts serving (e.g. to wrap its listener).
func startGatewayWith(t testing.TB, cfg Config, before func(*Main)) *Main {
	t.Helper()
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	if before != nil {
		before(m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway run: %v", err)
		}
		m.Close()
	})
	waitReady(t, m.URL())
	return m
}

// waitReady polls /readyz for up to a minute: a gateway process on a new
// database applies every migration first, which a loaded machine can
// stretch to many seconds.
func waitReady(t testing.TB, base string) {
	t.Helper()
	probe := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := probe.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	t.Fatalf("gateway at %s never became ready within a minute", base)
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

// post sends a notification and returns status and decoded JSON body.
func post(t testing.TB, url string, n wxpaysim.Notification) (int, map[string]any) {
	t.Helper()
	resp, err := n.Post(context.Background(), httpClient, url)
	if err != nil {
		t.Fatalf("post notification: %v", err)
	}
	return decode(t, resp)
}

func decode(t testing.TB, resp *http.Response) (int, map[string]any) {
	t.Helper()
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("status %d, body not JSON: %q", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, body
}

// apiCall does a JSON request with an API key.
func apiCall(t *testing.T, method, url, key string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return decode(t, resp)
}

var seq struct {
	sync.Mutex
	n int
}

// uniqueNo returns a fresh out_trade_no.
func uniqueNo(prefix string) string {
	seq.Lock()
	defer seq.Unlock()
	seq.n++
	return fmt.Sprintf("%s%d%06d", prefix, time.Now().UnixNano()%1e9, seq.n)
}

// paidTx is the plaintext of a successful payment of out_trade_no.
func paidTx(k *wxpaysim.Keys, outTradeNo string, amount int64) wxpaysim.Transaction {
	return wxpaysim.Transaction{AppID: k.AppID, MchID: k.MchID, OutTradeNo: outTradeNo,
		TransactionID: "42000" + outTradeNo, TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功",
		SuccessTime: time.Now().Format(time.RFC3339), Payer: &wxpaysim.Payer{OpenID: "openid-" + outTradeNo},
		Amount: wxpaysim.TransactionAmount{Total: amount, PayerTotal: amount, Currency: "CNY", PayerCurrency: "CNY"}}
}

// mustNotification panics (failing the test) if building a fixture failed.
func mustNotification(n wxpaysim.Notification, err error) wxpaysim.Notification {
	if err != nil {
		panic("build notification: " + err.Error())
	}
	return n
}

// ledgerCounts returns payments, history rows and notifications stored for
// an order, read straight from the database.
func ledgerCounts(t *testing.T, m *Main, outTradeNo string) [3]int64 {
	t.Helper()
	var out [3]int64
	db := m.Store.DB()
	for i, table := range []string{"payments", "state_history", "notifications"} {
		if err := db.Table(table).Where("out_trade_no = ?", outTradeNo).Count(&out[i]).Error; err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// fireAll fires ns at the payment route at once and requires a 204 for each.
func fireAll(t *testing.T, m *Main, ns []wxpaysim.Notification) {
	t.Helper()
	for i, s := range fire(t, m.URL()+paymentPath, ns) {
		if s != 204 {
			t.Errorf("delivery %d: status %d, want 204", i, s)
		}
	}
}

// assertRecordedOnce requires one payment, one history row and one
// notification for each order.
func assertRecordedOnce(t *testing.T, m *Main, orders ...string) {
	t.Helper()
	for _, no := range orders {
		if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 1} {
			t.Fatalf("%s: payments/history/notifications = %v, want [1 1 1]", no, got)
		}
	}
}
