package main

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// hungRedis listens on a port that accepts connections and never answers.
func hungRedis(t *testing.T) string { return serveTCP(t, func(net.Conn) {}) }

// serveTCP listens on a free local port and hands each connection to
// handle, in its own goroutine, until the test ends; then the listener and
// every connection are closed.
func serveTCP(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// metricFamily gathers one family from the gateway's own registry.
func metricFamily(t *testing.T, m *Main, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := m.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

// TestHungRedisGatewayAnswersFromDatabase points Redis at a listener that
// never answers: every notification must still be recorded once and
// answered 204, and no Redis call may outlive the op timeout (measured by
// gateway_redis_call_seconds, not by timing whole requests).
func TestHungRedisGatewayAnswersFromDatabase(t *testing.T) {
	for _, b := range []backend{{name: "sqlite"}, {name: "mysql", mysql: true}} {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig(t, b)
			cfg.Redis.Addr = hungRedis(t)
			opTimeout := cfg.Redis.OpTimeout
			m := startGateway(t, cfg)
			k, _ := testKeys(t)
			var ns []wxpaysim.Notification
			var orders []string
			for i := 0; i < 8; i++ {
				no := uniqueNo("hung")
				orders = append(orders, no)
				n := mustNotification(k.PaymentNotification(paidTx(k, no, 300), wxpaysim.PublicKeyMode(), time.Now()))
				ns = append(ns, n, mustNotification(n.Resign(k, wxpaysim.CertMode(0), time.Now())))
			}
			fireAll(t, m, ns)
			assertRecordedOnce(t, m, orders...)
			assertRedisCallsBounded(t, m, opTimeout+250*time.Millisecond)
			fb := metricFamily(t, m, "gateway_redis_fallbacks_total")
			if fb == nil || sumCounters(fb) < float64(len(ns)) {
				t.Fatalf("fallbacks = %v, want at least one per delivery (%d)", fb, len(ns))
			}
		})
	}
}

// TestHungRedisCostsARequestOneWaitAtMost: twenty deliveries of one
// notification at once with Redis hung. Each Redis call is bounded, but
// the deliveries that find the notification locked retry the lock every
// few milliseconds: without the breaker each retry waited the op timeout
// again. With it a request makes at most one Redis call, and once the
// breaker is open later requests make none.
func TestHungRedisCostsARequestOneWaitAtMost(t *testing.T) {
	cfg := testConfig(t, backend{name: "sqlite"})
	cfg.Redis.Addr = hungRedis(t)
	cfg.Redis.BreakerCooldown = time.Minute
	m := startGateway(t, cfg)
	k, _ := testKeys(t)
	no := uniqueNo("hung1")
	first := mustNotification(k.PaymentNotification(paidTx(k, no, 300), wxpaysim.PublicKeyMode(), time.Now()))
	ns := []wxpaysim.Notification{first}
	for len(ns) < 20 {
		ns = append(ns, mustNotification(first.Resign(k, wxpaysim.PublicKeyMode(), time.Now())))
	}
	fireAll(t, m, ns)
	assertRecordedOnce(t, m, no)
	calls := redisCalls(t, m)
	if calls == 0 || calls > uint64(len(ns)) {
		t.Fatalf("%d Redis calls for %d requests, want between 1 and one per request", calls, len(ns))
	}
	for i := range 4 {
		ns[i] = mustNotification(first.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
	}
	fireAll(t, m, ns[:4])
	if after := redisCalls(t, m); after != calls {
		t.Fatalf("%d Redis calls while the breaker is open, want none", after-calls)
	}
}

// redisCalls counts the observations of gateway_redis_call_seconds.
func redisCalls(t *testing.T, m *Main) uint64 {
	t.Helper()
	var n uint64
	if fam := metricFamily(t, m, "gateway_redis_call_seconds"); fam != nil {
		for _, s := range fam.GetMetric() {
			n += s.GetHistogram().GetSampleCount()
		}
	}
	return n
}

// assertRedisCallsBounded checks that every observation of
// gateway_redis_call_seconds falls in a bucket at or under bound.
func assertRedisCallsBounded(t *testing.T, m *Main, bound time.Duration) {
	t.Helper()
	fam := metricFamily(t, m, "gateway_redis_call_seconds")
	if fam == nil {
		t.Fatal("no gateway_redis_call_seconds observations")
	}
	var total uint64
	for _, s := range fam.GetMetric() {
		h := s.GetHistogram()
		total += h.GetSampleCount()
		var within uint64
		for _, bk := range h.GetBucket() {
			if bk.GetUpperBound() <= bound.Seconds() {
				within = bk.GetCumulativeCount()
			}
		}
		if within != h.GetSampleCount() {
			t.Errorf("redis %v: %d of %d calls took longer than %v (sum %.3fs)", s.GetLabel(),
				h.GetSampleCount()-within, h.GetSampleCount(), bound, h.GetSampleSum())
		}
	}
	if total == 0 {
		t.Fatal("no Redis calls were measured")
	}
}

func sumCounters(f *dto.MetricFamily) float64 {
	var n float64
	for _, s := range f.GetMetric() {
		n += s.GetCounter().GetValue()
	}
	return n
}

// TestRateLimitedAPIs: finance and the order service are limited per API
// key with 429 ERATE_LIMITED and Retry-After; WeChat never is.
func TestRateLimitedAPIs(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig(t, b)
			cfg.RateLimit = RateLimitConfig{LedgerPerMinute: 1, LedgerBurst: 3, OrdersPerMinute: 1, OrdersBurst: 2}
			m := startGateway(t, cfg)
			for i := 0; i < 3; i++ {
				if status, body := apiCall(t, "GET", m.URL()+"/v1/ledger/payments/nosuch"+uniqueNo(""), financeKey, nil); status != 404 {
					t.Fatalf("call %d: status=%d body=%v, want 404 within the burst", i, status, body)
				}
			}
			assertLimited(t, "GET", m.URL()+"/v1/ledger/payments/nosuch", financeKey, nil)
			// Another principal has its own budget.
			if status, body := apiCall(t, "GET", m.URL()+"/v1/ledger/payments/nosuch", opsKey, nil); status != 404 {
				t.Fatalf("ops key: status=%d body=%v, want 404", status, body)
			}
			// The ops endpoints share the caller's ledger budget.
			for i := 0; i < 2; i++ {
				if status, body := apiCall(t, "GET", m.URL()+"/v1/ops/outbox/dead", opsKey, nil); status != 200 {
					t.Fatalf("dead letters %d: status=%d body=%v", i, status, body)
				}
			}
			assertLimited(t, "GET", m.URL()+"/v1/ops/outbox/dead", opsKey, nil)
			for i := 0; i < 2; i++ {
				if status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(uniqueNo("rl"), 100)); status != 201 {
					t.Fatalf("order %d: status=%d body=%v", i, status, body)
				}
			}
			assertLimited(t, "POST", m.URL()+"/v1/orders", serviceKey, order(uniqueNo("rl"), 100))
			// WeChat's notifications are never limited.
			k, _ := testKeys(t)
			var ns []wxpaysim.Notification
			for i := 0; i < 10; i++ {
				ns = append(ns, good(t, k, uniqueNo("nolimit")))
			}
			for i, s := range fire(t, m.URL()+paymentPath, ns) {
				if s != 204 {
					t.Errorf("notification %d: status=%d, want 204", i, s)
				}
			}
			if f := metricFamily(t, m, "gateway_rate_limited_total"); f == nil || sumCounters(f) != 3 {
				t.Fatalf("gateway_rate_limited_total = %v, want 3", f)
			}
		})
	}
}

func assertLimited(t *testing.T, method, url, key string, body any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, jsonBody(body))
	req.Header.Set("X-Api-Key", key)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	retry := resp.Header.Get("Retry-After")
	status, out := decode(t, resp)
	if status != 429 || out["code"] != gateway.CodeRateLimited || retry == "" || retry == "0" {
		t.Fatalf("%s %s: status=%d body=%v Retry-After=%q, want 429 ERATE_LIMITED with Retry-After", method, url, status, out, retry)
	}
}

func jsonBody(v any) io.Reader {
	if v == nil {
		return nil
	}
	b, _ := json.Marshal(v)
	return strings.NewReader(string(b))
}

// TestMetricsEndpoint scrapes /metrics after notifications with each
// outcome.
func TestMetricsEndpoint(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			n := good(t, k, uniqueNo("met"))
			post(t, m.URL()+paymentPath, n)
			post(t, m.URL()+paymentPath, mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now())))
			forged := good(t, k, uniqueNo("met"))
			forged.Header.Set("Wechatpay-Signature", "AAAA")
			post(t, m.URL()+paymentPath, forged)
			resp, err := getMetrics(m.URL())
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			text := string(raw)
			for _, want := range []string{
				`gateway_notifications_total{kind="payment",outcome="success"} 1`,
				`gateway_notifications_total{kind="payment",outcome="duplicate"} 1`,
				`gateway_notifications_total{kind="payment",outcome="ESIGNATURE"} 1`,
				`gateway_http_requests_total{code="204",method="POST",route="/v1/wechatpay/notify/payment"} 2`,
				`gateway_http_request_duration_seconds_bucket{method="POST",route="/v1/wechatpay/notify/payment",le="+Inf"} 3`,
				`go_sql_open_connections{db_name="ledger"}`,
				`gateway_ledger_scrape_errors 0`,
			} {
				if !strings.Contains(text, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			// The job confirming the order's stock waits (no inventory here): its age is seconds.
			if age := oldestPendingAge(text); age < 0 || age > 300 {
				t.Errorf("oldest pending job's age %v s, want between 0 and 300", age)
			}
			if lag := seriesValue(text, `gateway_outbox_due_lag_seconds{kind="inventory.confirm"}`); lag < 0 || lag > 300 {
				t.Errorf("outbox due lag %v s, want between 0 and 300 (the job is due, nobody takes it)", lag)
			}
			if t.Failed() {
				t.Logf("/metrics:\n%s", text)
			}
		})
	}
}

// oldestPendingAge reads the age of the oldest stock confirmation not
// done from a /metrics text (-1 if absent).
func oldestPendingAge(text string) float64 {
	return seriesValue(text, `gateway_outbox_oldest_pending_age_seconds{kind="inventory.confirm"}`)
}

// seriesValue reads one sample from a /metrics text (-1 if absent).
func seriesValue(text, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestLedgerGaugesAreShared: the ledger gauges (four aggregate queries)
// are read once per ten seconds however often /metrics is scraped, so a
// new outbox job shows up only in a later reading.
func TestLedgerGaugesAreShared(t *testing.T) {
	m := startGateway(t, testConfig(t, backends[0]))
	k, _ := testKeys(t)
	jobs := func() string {
		t.Helper()
		resp, err := getMetrics(m.URL())
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, `gateway_outbox_jobs{kind="inventory.confirm"`) {
				return line
			}
		}
		return "none"
	}
	before := jobs()
	if status, _ := post(t, m.URL()+paymentPath, good(t, k, uniqueNo("gs"))); status != 204 {
		t.Fatalf("notification: status %d", status)
	}
	if after := jobs(); after != before {
		t.Fatalf("gauges read again within the TTL: %q then %q", before, after)
	}
}

// TestPublicMetricsTakeAKey: on the port WeChat Pay and users reach,
// /metrics (refund counts, anomalies, traffic) takes a metrics or ops key:
// without a key 401, with finance's 403, with a metrics or ops key
// (X-Api-Key, or the Bearer token Prometheus sends) the metrics. A
// metrics key can do nothing else.
func TestPublicMetricsTakeAKey(t *testing.T) {
	m := startGateway(t, testConfig(t, backends[0]))
	cases := []struct {
		name, header, value string
		status              int
	}{
		{"no key", "", "", 401},
		{"unknown key", "X-Api-Key", "nope-" + opsKey, 401},
		{"finance key", "X-Api-Key", financeKey, 403},
		{"finance bearer", "Authorization", "Bearer " + financeKey, 403},
		{"ops key", "X-Api-Key", opsKey, 200},
		{"ops bearer", "Authorization", "Bearer " + opsKey, 200},
		{"metrics bearer", "Authorization", "bearer " + metricsKey, 200},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest("GET", m.URL()+"/metrics", nil)
		if tc.header != "" {
			req.Header.Set(tc.header, tc.value)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics := strings.Contains(string(raw), "gateway_http_requests_total")
		if resp.StatusCode != tc.status || metrics != (tc.status == 200) {
			t.Errorf("%s: %d (metrics %t), want %d", tc.name, resp.StatusCode, metrics, tc.status)
		}
	}
	for _, path := range []string{"/v1/ledger/payments", "/v1/ops/outbox/dead", "/v1/ledger/audit"} {
		if status, body := apiCall(t, "GET", m.URL()+path, metricsKey, nil); status != 403 || body["code"] != "EFORBIDDEN" {
			t.Errorf("metrics key on %s: %d %v, want 403", path, status, body)
		}
	}
}

// TestMetricsOnInternalListener moves /metrics off the public port:
// http.metrics_addr serves it on its own listener, and the port WeChat
// Pay and users reach answers it with a JSON 404.
func TestMetricsOnInternalListener(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.MetricsAddr = "127.0.0.1:0"
	m := startGateway(t, cfg)
	k, _ := testKeys(t)
	post(t, m.URL()+paymentPath, good(t, k, uniqueNo("mi")))
	resp, err := httpClient.Get(m.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || e.Code != "ENOTFOUND" {
		t.Errorf("public /metrics: %d %q, want 404 ENOTFOUND", resp.StatusCode, e.Code)
	}
	if !strings.HasPrefix(m.MetricsURL(), "http://127.0.0.1:") || strings.HasPrefix(m.MetricsURL(), m.URL()) {
		t.Fatalf("MetricsURL %s is not its own listener", m.MetricsURL())
	}
	resp, err = httpClient.Get(m.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `gateway_notifications_total{kind="payment",outcome="success"} 1`
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), want) {
		t.Errorf("internal /metrics: %d, lacks %s", resp.StatusCode, want)
	}
}

// TestLogsCarryNoSecrets runs good and bad notifications and API calls and
// greps everything logged for the APIv3 key, the API keys, signatures and
// the notification ciphertexts.
func TestLogsCarryNoSecrets(t *testing.T) {
	logs := captureLogs(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig(t, b)
			cfg.WechatPay.PreviousAPIv3Key = randomAPIv3Key(t)
			m := startGateway(t, cfg)
			k, _ := testKeys(t)
			secrets := map[string]string{"APIv3 key": k.APIv3Key, "previous APIv3 key": cfg.WechatPay.PreviousAPIv3Key,
				"service key": serviceKey, "finance key": financeKey, "ops key": opsKey}
			var sent []wxpaysim.Notification
			n := good(t, k, uniqueNo("log"))
			sent = append(sent, n, mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now())),
				good(t, withAPIv3Key(k, cfg.WechatPay.PreviousAPIv3Key), uniqueNo("log")))
			for _, bc := range badCases() {
				sent = append(sent, bc.build(t, k, uniqueNo("log")))
			}
			for _, s := range sent {
				post(t, m.URL()+paymentPath, s)
			}
			apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(uniqueNo("log"), 100))
			apiCall(t, "GET", m.URL()+"/v1/ledger/payments/"+n.ID, financeKey, nil)
			apiCall(t, "GET", m.URL()+"/v1/ledger/payments/x", opsKey, nil)
			apiCall(t, "GET", m.URL()+"/v1/ledger/payments/x", "wrong-"+financeKey, nil)
			apiCall(t, "POST", m.URL()+"/v1/orders", financeKey, map[string]any{"bogus": serviceKey})
			for i, s := range sent {
				if ct := ciphertext(s.Body); len(ct) > 24 {
					secrets["ciphertext"+string(rune('A'+i))] = ct[:24]
				}
				if sig := s.Header.Get("Wechatpay-Signature"); len(sig) > 24 {
					secrets["signature"+string(rune('A'+i))] = sig[:24]
				}
			}
			out := logs.String()
			if len(logLines(t, out, "http request")) < len(sent) || !strings.Contains(out, `"request_id"`) {
				t.Fatalf("logs were not captured:\n%s", out)
			}
			for what, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("the logs contain the %s", what)
				}
			}
		})
	}
}

// TestRefundLogsCarryNoSecrets: the refund path logs (a request, a
// tampered token, WeChat Pay faults that end in an unknown outcome and a
// query, a refund notification) hold no user token, no JWT secret and no
// part of the merchant's private key.
func TestRefundLogsCarryNoSecrets(t *testing.T) {
	logs := captureLogs(t)
	e := startRefundEnv(t, backends[0], nil)
	openid := "o-logs"
	no, tok := e.pay(t, openid, 100), token(t, openid)
	created := e.refund(t, tok, "k-logs-1", refundBody(no, 10))
	if created.status != 201 {
		t.Fatalf("refund: %d %s", created.status, created.body)
	}
	if a := e.refund(t, tok[:len(tok)-4]+"AAAA", "k-logs-2", refundBody(no, 10)); a.status != 401 { // a forged signature
		t.Fatalf("forged token: %d %s, want 401", a.status, a.body)
	}
	e.sim.SetFaults(wxpaysim.Faults{Fail5xxNext: 1, DropNext: 1})
	e.refund(t, tok, "k-logs-3", refundBody(no, 10))
	e.refundNotice(t, ledgerRefund(t, e.m, created.json(t)["out_refund_no"].(string)), "SUCCESS")
	der, err := x509.MarshalPKCS8PrivateKey(e.k.MerchantKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := base64.StdEncoding.EncodeToString(der)
	secrets := map[string]string{"user token": tok, "token signature": tok[strings.LastIndex(tok, ".")+1:],
		"JWT secret": jwtSecret, "merchant key": pemKey[100:140]}
	out := logs.String()
	if len(logLines(t, out, "http request")) < 4 || !strings.Contains(out, "outcome unknown") {
		t.Fatalf("the refund path's logs were not captured:\n%s", out)
	}
	for what, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the logs contain the %s", what)
		}
	}
}

func ciphertext(body []byte) string {
	var env struct {
		Resource struct {
			Ciphertext string `json:"ciphertext"`
		} `json:"resource"`
	}
	_ = json.Unmarshal(body, &env)
	return env.Resource.Ciphertext
}

// captureLogs sends the default logger (as serve configures it: JSON,
// request ids, debug level) to a buffer for the test.
func captureLogs(t *testing.T) *logBuffer {
	t.Helper()
	buf := &logBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(gateway.NewLogHandler(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	t.Cleanup(func() { slog.SetDefault(old) })
	return buf
}

func logLines(t *testing.T, out, msg string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["msg"] == msg {
			lines = append(lines, m)
		}
	}
	return lines
}

// TestRefundAPIRateLimitedPerOpenID: the refund API is limited per JWT
// openid (429 with Retry-After); another openid is not, and WeChat's
// refund notifications of the limited user's refund never are.
func TestRefundAPIRateLimitedPerOpenID(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, func(c *Config) { c.RateLimit.RefundsPerMinute, c.RateLimit.RefundsBurst = 1, 2 })
			openid := "o-rl-" + b.tag()
			no, tok := e.pay(t, openid, 100), token(t, openid)
			created := e.refund(t, tok, "k-rl", refundBody(no, 10))
			if created.status != 201 {
				t.Fatalf("refund within the burst: status=%d body=%s", created.status, created.body)
			}
			if a := e.getRefund(t, tok, "nosuchrefund"); a.status != 404 {
				t.Fatalf("second call: status=%d body=%s, want 404 within the burst", a.status, a.body)
			}
			a := e.getRefund(t, tok, "nosuchrefund")
			if wait, err := strconv.Atoi(a.header.Get("Retry-After")); a.status != 429 ||
				a.json(t)["code"] != gateway.CodeRateLimited || err != nil || wait < 1 || wait > 60 {
				t.Fatalf("over the burst: status=%d body=%s Retry-After %q, want 429 ERATE_LIMITED with 1-60 s",
					a.status, a.body, a.header.Get("Retry-After"))
			}
			if a := e.getRefund(t, token(t, "o-other-"+b.tag()), "nosuchrefund"); a.status != 404 {
				t.Fatalf("another openid: status=%d, want 404", a.status)
			}
			r := ledgerRefund(t, e.m, created.json(t)["out_refund_no"].(string))
			for i := range 5 { // the settlement and its redeliveries
				if code, _ := e.refundNotice(t, r, "SUCCESS"); code != 204 {
					t.Fatalf("refund notification %d while the user is limited: %d, want 204", i, code)
				}
			}
			if r := ledgerRefund(t, e.m, r.OutRefundNo); r.State != ledger.RefundSuccess {
				t.Fatalf("refund %s after its notifications, want SUCCESS", r.State)
			}
		})
	}
}

// TestRefundCallsLimitedForAllUsers: refund applications of all users
// together are limited (WeChat Pay's per-merchant rate): of 8 parallel
// requests from 8 users, the burst of 3 goes to WeChat Pay and the rest get
// 429 ERATE_LIMITED and leave no trace; a refused request sent again after
// its Retry-After goes through. The rate (20/min, a token every 3 s)
// leaves the 8 requests 3 s to all be checked, on a slow machine too.
func TestRefundCallsLimitedForAllUsers(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // its own gateway, simulator, database and Redis prefix; mostly waiting
			e := startRefundEnv(t, b, func(c *Config) { c.RateLimit.RefundCallsPerMinute, c.RateLimit.RefundCallsBurst = 20, 3 })
			const n = 8
			var nos, toks [n]string
			for i := range n {
				openid := fmt.Sprintf("o-rc-%s-%d", b.tag(), i)
				nos[i], toks[i] = e.pay(t, openid, 100), token(t, openid)
			}
			var answers [n]answer
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { answers[i] = e.refund(t, toks[i], "k-"+nos[i], refundBody(nos[i], 10)) })
			}
			wg.Wait()
			refused := assertRefundCallsSplit(t, e, nos[:], answers[:], 3)
			i := refused[0]
			wait, err := strconv.Atoi(answers[i].header.Get("Retry-After"))
			if err != nil || wait < 1 || wait > 3 {
				t.Fatalf("Retry-After %q, want 1-3 s at 20/min", answers[i].header.Get("Retry-After"))
			}
			time.Sleep(time.Duration(wait)*time.Second + 100*time.Millisecond)
			if a := e.refund(t, toks[i], "k-"+nos[i], refundBody(nos[i], 10)); a.status != 201 {
				t.Fatalf("refused request sent again after Retry-After: status=%d body=%s, want 201", a.status, a.body)
			}
		})
	}
}

// TestRefundCallsSpentOnlyByNewRefunds: only a request that will send a
// new refund to WeChat Pay spends the merchant-wide budget. With a burst
// of 2, a refund, parallel replays of its key, a reused key with other
// parameters and an invalid body leave room for a second refund; the
// third is refused with Retry-After, counted in the metrics, and leaves no
// trace.
func TestRefundCallsSpentOnlyByNewRefunds(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, func(c *Config) { c.RateLimit.RefundCallsPerMinute, c.RateLimit.RefundCallsBurst = 1, 2 })
			var nos, toks [3]string
			for i := range nos {
				openid := fmt.Sprintf("o-rcn-%s-%d", b.tag(), i)
				nos[i], toks[i] = e.pay(t, openid, 100), token(t, openid)
			}
			if a := e.refund(t, toks[0], "k-"+nos[0], refundBody(nos[0], 10)); a.status != 201 {
				t.Fatalf("first refund: status=%d body=%s, want 201", a.status, a.body)
			}
			spendNothing(t, e, toks[0], nos[0])
			if a := e.refund(t, toks[1], "k-"+nos[1], refundBody(nos[1], 10)); a.status != 201 {
				t.Fatalf("second refund after replays: status=%d body=%s, want 201 (replays spent the budget)", a.status, a.body)
			}
			a := e.refund(t, toks[2], "k-"+nos[2], refundBody(nos[2], 10))
			if a.status != 429 || a.json(t)["code"] != gateway.CodeRateLimited || a.header.Get("Retry-After") == "" {
				t.Fatalf("third refund: status=%d Retry-After=%q body=%s, want 429 ERATE_LIMITED with Retry-After",
					a.status, a.header.Get("Retry-After"), a.body)
			}
			if refunds, keys := refundRows(t, e.m, nos[2]); refunds != 0 || keys != 2 {
				t.Fatalf("refused refund left refunds=%d, keys=%d; want 0 and the 2 earlier keys", refunds, keys)
			}
			if calls := len(e.sim.Refunds()); calls != 2 {
				t.Fatalf("WeChat Pay saw %d refunds, want 2", calls)
			}
			if f := metricFamily(t, e.m, "gateway_rate_limited_total"); f == nil || sumCounters(f) != 1 {
				t.Fatalf("gateway_rate_limited_total = %v, want 1", f)
			}
		})
	}
}

// spendNothing sends requests that never reach WeChat Pay: 6 parallel
// replays of the key k-<no>, the key with other parameters and an
// invalid body.
func spendNothing(t *testing.T, e *refundEnv, tok, no string) {
	t.Helper()
	var answers [6]answer
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i] = e.refund(t, tok, "k-"+no, refundBody(no, 10)) })
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != 201 || a.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay %d: status=%d replayed=%q, want a replayed 201", i, a.status, a.header.Get("Idempotent-Replayed"))
		}
	}
	if a := e.refund(t, tok, "k-"+no, refundBody(no, 20)); a.status != 422 {
		t.Fatalf("key reused with other parameters: status=%d body=%s, want 422", a.status, a.body)
	}
	if a := e.refund(t, tok, "k-bad-"+no, refundBody(no, 0)); a.status != 400 {
		t.Fatalf("invalid amount: status=%d body=%s, want 400", a.status, a.body)
	}
}

// assertRefundCallsSplit checks that exactly allowed answers are 201 and
// the others 429 ERATE_LIMITED, without a refund, an
// idempotency key or a WeChat Pay call; it returns the refused indexes.
func assertRefundCallsSplit(t *testing.T, e *refundEnv, nos []string, answers []answer, allowed int) []int {
	t.Helper()
	var refused []int
	for i, a := range answers {
		switch {
		case a.status == 201:
		case a.status == 429 && a.json(t)["code"] == gateway.CodeRateLimited:
			refused = append(refused, i)
			if refunds, _ := refundRows(t, e.m, nos[i]); refunds != 0 {
				t.Fatalf("refused request for %s left %d refunds", nos[i], refunds)
			}
		default:
			t.Fatalf("request %d: status=%d body=%s, want 201 or 429", i, a.status, a.body)
		}
	}
	if len(answers)-len(refused) != allowed {
		t.Fatalf("%d requests went through, want the burst of %d", len(answers)-len(refused), allowed)
	}
	if _, keys := refundRows(t, e.m, ""); keys != int64(allowed) {
		t.Fatalf("idempotency keys = %d, want %d (refused requests keep none)", keys, allowed)
	}
	if calls := len(e.sim.Refunds()); calls != allowed {
		t.Fatalf("WeChat Pay saw %d refunds, want %d", calls, allowed)
	}
	return refused
}

// TestRefundCallsLimitSharedByInstances: two gateways on one database and
// Redis share the limit on refund applications: of 6 parallel requests,
// 3 to each, only the burst of 2 goes through.
func TestRefundCallsLimitSharedByInstances(t *testing.T) {
	b := backends[1] // mysql+redis
	e := startRefundEnv(t, b, func(c *Config) { c.RateLimit.RefundCallsPerMinute, c.RateLimit.RefundCallsBurst = 1, 2 })
	other := &refundEnv{m: startGateway(t, e.m.Config), sim: e.sim, k: e.k}
	const n = 6
	var nos, toks [n]string
	for i := range n {
		openid := fmt.Sprintf("o-rcs-%d", i)
		nos[i], toks[i] = e.pay(t, openid, 100), token(t, openid)
	}
	var answers [n]answer
	var wg sync.WaitGroup
	for i := range n {
		gw := []*refundEnv{e, other}[i%2]
		wg.Go(func() { answers[i] = gw.refund(t, toks[i], "k-"+nos[i], refundBody(nos[i], 10)) })
	}
	wg.Wait()
	assertRefundCallsSplit(t, e, nos[:], answers[:], 2)
}
