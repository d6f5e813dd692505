package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
)

// TestGracefulShutdown holds a payment notification in flight (its
// payment row is locked by the test's own MySQL transaction) and a slow
// route, starts the shutdown, and checks: new connections are refused,
// the in-flight requests finish (the notification is recorded and
// answered 204), the jobs stop, and Run returns cleanly.
func TestGracefulShutdown(t *testing.T) {
	cfg := testConfig(t, backend{name: "mysql+redis", mysql: true, redis: true})
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	started, release := make(chan struct{}), make(chan struct{})
	m.Deps.Routes = append(m.Deps.Routes, func(r *gin.Engine, _ *gateway.Deps) {
		r.GET("/test/slow", func(c *gin.Context) {
			close(started)
			<-release
			c.JSON(http.StatusOK, gin.H{"done": true})
		})
	})
	var jobStopped atomic.Bool
	m.AddJob(func(ctx context.Context) {
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // e.g. releasing leases
		jobStopped.Store(true)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitReady(t, m.URL())

	k, _ := testKeys(t)
	no := uniqueNo("shut")
	if status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(no, 700)); status != 201 {
		t.Fatalf("register: status=%d body=%v", status, body)
	}
	tx := m.Store.DB().Begin()
	if err := tx.Exec("SELECT id FROM payments WHERE out_trade_no = ? FOR UPDATE", no).Error; err != nil {
		t.Fatal(err)
	}
	notifyStatus := make(chan int, 1)
	go func() {
		n := mustNotification(k.PaymentNotification(paidTx(k, no, 700), wxpaysim.PublicKeyMode(), time.Now()))
		resp, err := n.Post(context.Background(), httpClient, m.URL()+paymentPath)
		if err != nil {
			notifyStatus <- -1
			return
		}
		resp.Body.Close()
		notifyStatus <- resp.StatusCode
	}()
	slowStatus := make(chan int, 1)
	go func() {
		resp, err := httpClient.Get(m.URL() + "/test/slow")
		if err != nil {
			slowStatus <- -1
			return
		}
		resp.Body.Close()
		slowStatus <- resp.StatusCode
	}()
	<-started
	waitNotificationBlocked(t, m)

	cancel()
	waitRefused(t, m.Addr())
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with requests still in flight", err)
	default:
	}
	if err := tx.Rollback().Error; err != nil {
		t.Fatal(err)
	}
	close(release)
	if s := <-notifyStatus; s != 204 {
		t.Fatalf("in-flight notification: status=%d, want 204", s)
	}
	if s := <-slowStatus; s != 200 {
		t.Fatalf("in-flight request: status=%d, want 200", s)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !jobStopped.Load() {
		t.Fatal("Run returned before the job finished stopping")
	}
	if got := ledgerCounts(t, m, no); got != [3]int64{1, 2, 1} {
		t.Fatalf("payments/history/notifications = %v, want [1 2 1]", got)
	}
}

// waitNotificationBlocked waits until the notification is stuck on the
// test's row lock (MySQL shows the waiting query in the processlist).
func waitNotificationBlocked(t *testing.T, m *Main) {
	t.Helper()
	for i := 0; i < 250; i++ {
		var n int64
		m.Store.DB().Raw("SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID() " +
			"AND info LIKE '%FROM `payments`%FOR UPDATE%'").Scan(&n)
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the notification never reached the locked payment row")
}

// waitRefused waits until the listener is closed.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 250; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s still accepts connections during shutdown", addr)
}

// TestJobsStopWhenShutdownBegins: background jobs (outbox workers, the
// janitor) are told to stop as soon as shutdown begins, not after the
// HTTP requests have drained, so no new attempt starts during the drain
// and the one under way keeps the whole shutdown timeout.
func TestJobsStopWhenShutdownBegins(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.ReadTimeout = 3 * time.Second
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	stopped := make(chan time.Time, 1)
	m.AddJob(func(ctx context.Context) { <-ctx.Done(); stopped <- time.Now() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitReady(t, m.URL())

	// A request still in flight: its body has not all arrived.
	conn, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", paymentPath)
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case <-stopped:
	case <-done:
		t.Fatal("Run returned before the jobs were told to stop")
	case <-time.After(2 * time.Second):
		t.Fatal("jobs not told to stop while a request was still draining")
	}
	select {
	case <-done:
		t.Fatal("Run returned while a request was still in flight")
	default:
	}
	conn.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestShutdownCutsOffRequestsAndLetsThemCleanUp: a request still running
// when http.shutdown_timeout ends has its context cancelled, and Run
// returns (and the database may close) only once it has cleaned up (as a
// reconciliation hands its day's lease back), not while it still writes.
func TestShutdownCutsOffRequestsAndLetsThemCleanUp(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.ShutdownTimeout = 300 * time.Millisecond
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	entered := make(chan struct{})
	var cleaned atomic.Bool
	m.Deps.Routes = append(m.Deps.Routes, func(r *gin.Engine, _ *gateway.Deps) {
		r.GET("/slow", func(c *gin.Context) {
			close(entered)
			<-c.Request.Context().Done()
			time.Sleep(200 * time.Millisecond) // its clean-up takes a moment
			if err := m.Store.Ping(context.Background()); err == nil {
				cleaned.Store(true)
			}
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitReady(t, m.URL())
	go func() {
		if resp, err := http.Get(m.URL() + "/slow"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if !cleaned.Load() {
		t.Fatal("Run returned while a cut-off request was still cleaning up (or its context was never cancelled)")
	}
}

// TestDrainDelayFailsReadinessFirst: with http.drain_delay, a shutdown
// first keeps serving with /readyz answering 503 (so a load balancer
// stops sending traffic), and only then stops accepting.
func TestDrainDelayFailsReadinessFirst(t *testing.T) {
	t.Setenv("GATEWAY_HTTP_DRAIN_DELAY", "3s") // the checks below fit in it on a loaded machine
	base := testConfig(t, backends[0])
	cfg, err := Load("")
	if err != nil || cfg.HTTP.DrainDelay != 3*time.Second {
		t.Fatalf("drain delay from the environment: %v, %v", cfg.HTTP.DrainDelay, err)
	}
	base.HTTP.DrainDelay = cfg.HTTP.DrainDelay
	m, done := startDraining(t, base)
	if got := status(m, "/healthz"); got != 200 {
		t.Fatalf("while draining, /healthz answered %d: the listener must still serve", got)
	}
	waitRun(t, done, "after the drain")
	if got := status(m, "/healthz"); got != 0 {
		t.Fatalf("after the shutdown /healthz answered %d, want the connection refused", got)
	}
}

// TestSecondSignalCutsTheDrainShort: a second SIGTERM while draining
// (drain_delay 1 minute here) stops the instance at once.
func TestSecondSignalCutsTheDrainShort(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.DrainDelay = time.Minute
	_, done := startDraining(t, cfg)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil { // caught by the drain
		t.Fatal(err)
	}
	waitRun(t, done, "30 s after a second SIGTERM")
}

// startDraining runs a gateway, stops it (the first signal) and waits
// until it drains: /readyz answers 503. done gets Run's result.
func startDraining(t *testing.T, cfg Config) (*Main, <-chan error) {
	t.Helper()
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitReady(t, m.URL())
	cancel()
	waitFor(t, 2*time.Second, "/readyz answering 503 while draining", func() bool { return status(m, "/readyz") == 503 })
	return m, done
}

// status is the status of GET path, or 0 when nothing answers.
func status(m *Main, path string) int {
	resp, err := http.Get(m.URL() + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitRun waits up to 30 s for Run to return nil: generous for a loaded
// machine (a refund held 7 s at WeChat Pay ends the shutdown after it),
// and still well under the minute of drain a second signal must cut short.
func waitRun(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return " + what)
	}
}

// TestShutdownWaitsForARefundWeChatPayHolds: a refund whose WeChat Pay call
// outlasts shutdown_timeout and the cut-off's grace still ends, recorded,
// before Run returns and the database closes: its client gets its answer,
// the ledger holds what WeChat Pay said, and the key holds the answer.
// (Before, the database closed under it: WeChat Pay took the refund, the
// ledger kept it CREATED and the key IN_FLIGHT, and the client of a real,
// exited process got no answer and might refund again under a new key.)
func TestShutdownWaitsForARefundWeChatPayHolds(t *testing.T) {
	k, dir := testKeys(t)
	sim := wxpaysim.New(k, wxpaysim.Options{RefundSettleDelay: -1, NotifyRetryDelays: []time.Duration{}})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	cfg := testConfig(t, backends[1])
	w := &cfg.WechatPay
	w.BaseURL, w.MerchantSerial = srv.URL, k.MerchantSerial
	w.MerchantPrivateKeyFile = filepath.Join(dir, "merchant_private_key.pem")
	cfg.Refunds.JWT.HS256Secret, cfg.Refunds.JWT.Audience = jwtSecret, jwtAudience
	cfg.Refunds.JanitorInterval = time.Hour
	cfg.Finance.DailyReconcileAt = "off"
	cfg.HTTP.ShutdownTimeout = 300 * time.Millisecond
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitReady(t, m.URL())
	e := &refundEnv{m: m, sim: sim, k: k}
	no := e.pay(t, "o-shut", 100)
	// Slower than the shutdown's bound and the cut-off's grace (5 s),
	// within wechatpay.timeout (10 s).
	sim.SetFaults(wxpaysim.Faults{PathPrefix: "/v3/refund", Delay: 7 * time.Second})
	got := make(chan answer, 1)
	go func() { got <- e.refund(t, token(t, "o-shut"), "k-"+no, refundBody(no, 30)) }()
	waitFor(t, 10*time.Second, "the refund to be recorded before its call", func() bool {
		rs, err := m.Store.Refunds(context.Background(), no)
		return err == nil && len(rs) == 1
	})
	cancel()
	waitRun(t, done, "shutdown with a refund at WeChat Pay")
	m.Close()
	if a := <-got; a.status != http.StatusCreated && a.status != http.StatusAccepted {
		t.Fatalf("the refund's answer: %d %s, want 201 or 202", a.status, a.body)
	}
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: cfg.Database.DSN})
	if err != nil {
		t.Fatal(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	var state, key string
	db.Raw("SELECT state FROM refunds WHERE out_trade_no = ?", no).Scan(&state)
	db.Raw("SELECT state FROM idempotency_keys WHERE idem_key = ?", "k-"+no).Scan(&key)
	if state != "PROCESSING" || key != ledger.IdemDone {
		t.Errorf("after the shutdown: refund %q, key %q; want PROCESSING (as WeChat Pay holds it) and %s", state, key, ledger.IdemDone)
	}
}
