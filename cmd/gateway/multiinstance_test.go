package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"paygateway/cmd/internal/stack"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/redisstore/redistest"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// TestThreeInstancesOneLedger builds the real binary, runs three gateway
// processes on one MariaDB and one Redis (configured only through
// GATEWAY_* variables), and checks the money invariants across them:
//
//   - every notification is delivered to all three at once with
//     duplicates: one payment, one history row and one notification row
//     per order, every delivery answered 204, exactly one "success" per
//     order across the instances; forged copies of them, and forged
//     notifications of orders never paid, sent to all three among them,
//     are refused 401 ESIGNATURE and leave no trace;
//   - the outbox workers deliver the stock confirmations to an inventory
//     service that first applies every call and stalls, then fails 30%
//     and applies-then-stalls 20%; one instance is killed (SIGKILL) while
//     it holds a confirmation the inventory applied, and restarted: every
//     order is confirmed exactly once, no confirmation is sent twice (each
//     retry asked first), the work is shared;
//   - refunds go through a crash: see refundThroughACrash; then race
//     across the instances: see raceFreshRefunds.
func TestThreeInstancesOneLedger(t *testing.T) {
	w := startThreeInstances(t)
	orders := w.payEverywhere(t)
	w.killHoldingAnAppliedConfirmation(t, 0)
	w.inv.SetFaults(inventorysim.Faults{ErrorRate: 0.3, ApplyThenTimeoutRate: 0.2, ApplyThenTimeoutDelay: 600 * time.Millisecond})
	w.restart(t, 0)
	w.refundThroughACrash(t, orders)
	w.raceFreshRefunds(t, orders)
	checkConfirmedOnce(t, w.sqlDB, w.inv, orders)
	w.checkRefundedOnce(t, orders)
}

// multiWorld is three gateway processes sharing MariaDB, Redis, a WeChat
// Pay simulator and an inventory simulator.
type multiWorld struct {
	bin   string
	env   []string
	procs []*proc
	wx    *wxpaysim.Sim
	inv   *inventorysim.Sim
	k     *wxpaysim.Keys
	sqlDB *sql.DB
}

func startThreeInstances(t *testing.T) *multiWorld {
	dsn := ledgertest.MySQLDSN(t)
	rc := redistest.Config(t)
	w := &multiWorld{bin: buildGateway(t)}
	var invURL string
	w.inv, invURL = startInventory(t)
	w.k, _ = testKeys(t)
	w.wx = wxpaysim.New(w.k, wxpaysim.Options{RefundSettleDelay: 200 * time.Millisecond,
		NotifyRetryDelays: []time.Duration{200 * time.Millisecond, time.Second}})
	wxSrv := httptest.NewServer(w.wx.Handler())
	t.Cleanup(wxSrv.Close)
	t.Cleanup(w.wx.Close) // runs first: releases connections held by faults
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	w.env = append(instanceEnv(t, dsn, rc.Addr, rc.Prefix), "GATEWAY_INVENTORY_BASE_URL="+invURL,
		"GATEWAY_INVENTORY_TIMEOUT=300ms", "GATEWAY_OUTBOX_WORKERS=4", "GATEWAY_OUTBOX_BATCH=1",
		"GATEWAY_OUTBOX_POLL_INTERVAL=20ms", "GATEWAY_OUTBOX_LEASE=3s", "GATEWAY_OUTBOX_INITIAL_INTERVAL=20ms",
		"GATEWAY_OUTBOX_MAX_INTERVAL=200ms", "GATEWAY_OUTBOX_MAX_ELAPSED=1m",
		// The test MariaDB's max_connections (151 by default) is shared
		// with the other test packages: three instances at the default
		// 50 connections each may take 150 (the refund race took 138 of
		// them), and a connection refused there fails a delivery, here
		// or in another package. 30 each, within the pool budget.
		"GATEWAY_DATABASE_MAX_OPEN_CONNS=30", "GATEWAY_AUTH_MAX_KEY_LOOKUPS=2", "GATEWAY_FINANCE_MAX_REQUESTS=2")
	w.env = append(w.env, multiRefundEnv(t, wxSrv.URL, "http://"+addrs[2]+refundNotifyPath)...)
	for i, a := range addrs {
		w.procs = append(w.procs, startProcess(t, w.bin, w.env, i, a))
	}
	for _, p := range w.procs {
		waitReady(t, p.url())
	}
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	w.sqlDB, _ = db.DB()
	t.Cleanup(func() { w.sqlDB.Close() })
	return w
}

// multiRefundEnv turns on the refund API against the WeChat Pay simulator at
// wxURL. Timings: WeChat answers within 3 s, a create and a query fit
// the 7 s call timeout, and a retry may take a key over after 10 s; the
// simulator wants no gap between two refunds of an order, nor does the
// gateway.
func multiRefundEnv(t *testing.T, wxURL, notifyURL string) []string {
	k, dir := testKeys(t)
	return []string{"GATEWAY_WECHATPAY_BASE_URL=" + wxURL, "GATEWAY_WECHATPAY_MERCHANT_SERIAL=" + k.MerchantSerial,
		"GATEWAY_WECHATPAY_MERCHANT_PRIVATE_KEY_FILE=" + filepath.Join(dir, "merchant_private_key.pem"),
		"GATEWAY_WECHATPAY_REFUND_NOTIFY_URL=" + notifyURL, "GATEWAY_WECHATPAY_TIMEOUT=3s",
		"GATEWAY_REFUNDS_JWT_HS256_SECRET=" + jwtSecret, "GATEWAY_REFUNDS_JWT_AUDIENCE=" + jwtAudience,
		"GATEWAY_HTTP_API_TIMEOUT=2s", "GATEWAY_REFUNDS_CALL_TIMEOUT=7s", "GATEWAY_REFUNDS_IN_FLIGHT=10s",
		"GATEWAY_REFUNDS_SAFETY_BUFFER=8s", "GATEWAY_REFUNDS_RECHECK=1s", "GATEWAY_REFUNDS_JANITOR_INTERVAL=300ms",
		"GATEWAY_RATE_LIMIT_REFUNDS_PER_MINUTE=0", "GATEWAY_RATE_LIMIT_REFUND_CALLS_PER_MINUTE=0",
		"GATEWAY_REFUNDS_ORDER_GAP=1ms", "GATEWAY_FINANCE_DAILY_RECONCILE_AT=off"}
}

// paidOrder is an order WeChat Pay took payment of.
type paidOrder struct{ no, openid string }

const multiOrders = 24

// payEverywhere has WeChat Pay take payment of the orders and delivers
// each notification to every instance twice at once (public-key and
// certificate signatures), with the inventory applying every
// confirmation and then stalling, and stalling every query. At the same
// moment every instance is sent each notification's body under a
// forger's signature, and a forged notification of an order WeChat Pay
// never took payment of.
func (w *multiWorld) payEverywhere(t *testing.T) []paidOrder {
	// Queries stall too, so an applied confirmation stays unknown and its
	// job keeps coming back to the workers until the faults change: an
	// instance is sure to be caught holding one, however loaded the host.
	w.inv.SetFaults(inventorysim.Faults{ApplyThenTimeoutRate: 1, ApplyThenTimeoutDelay: 10 * time.Second,
		Only: inventorysim.OnlyAll})
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var orders []paidOrder
	var deliveries, forgeries []delivery
	var forgedOrders []string
	for i := 0; i < multiOrders; i++ {
		o := paidOrder{no: uniqueNo("multi"), openid: "o-multi-" + strconv.Itoa(i)}
		orders = append(orders, o)
		tx, err := w.wx.Pay(context.Background(), o.no, 100, o.openid, true)
		if err != nil {
			t.Fatal(err)
		}
		n := mustNotification(w.k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))
		for j, p := range w.procs {
			for _, mode := range []wxpaysim.SignMode{wxpaysim.PublicKeyMode(), wxpaysim.CertMode(j % 2)} {
				deliveries = append(deliveries, delivery{p.url() + paymentPath, mustNotification(n.Resign(w.k, mode, time.Now()))})
			}
		}
		never := uniqueNo("forged")
		forgedOrders = append(forgedOrders, never)
		fake := mustNotification(w.k.PaymentNotification(paidTx(w.k, never, 100), wxpaysim.PublicKeyMode(), time.Now()))
		for _, p := range w.procs {
			forgeries = append(forgeries, delivery{p.url() + paymentPath, signedBy(t, n, forger)},
				delivery{p.url() + paymentPath, signedBy(t, fake, forger)})
		}
	}
	answers := fireAt(t, append(deliveries, forgeries...))
	for i, a := range answers {
		switch genuine := i < len(deliveries); {
		case genuine && a.status != 204:
			t.Errorf("delivery %d to %s: status=%d, want 204", i, deliveries[i].url, a.status)
		case !genuine && (a.status != 401 || a.reason != "ESIGNATURE"):
			t.Errorf("forged delivery %d to %s: %d %s, want 401 ESIGNATURE", i, forgeries[i-len(deliveries)].url, a.status, a.reason)
		}
	}
	w.checkRecordedOnce(t, orders, len(deliveries))
	w.checkNoTrace(t, forgedOrders)
	return orders
}

// checkNoTrace wants the ledger to hold nothing of the forged orders, and
// no payment or notification beyond the genuine ones.
func (w *multiWorld) checkNoTrace(t *testing.T, forged []string) {
	for _, no := range forged {
		var n int
		err := w.sqlDB.QueryRow(`SELECT (SELECT COUNT(*) FROM payments WHERE out_trade_no = ?) +
			(SELECT COUNT(*) FROM notifications WHERE out_trade_no = ?) +
			(SELECT COUNT(*) FROM state_history WHERE out_trade_no = ?)`, no, no, no).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("forged order %s left %d rows in the ledger", no, n)
		}
	}
	var payments, notifications int
	if err := w.sqlDB.QueryRow("SELECT (SELECT COUNT(*) FROM payments), (SELECT COUNT(*) FROM notifications)").Scan(&payments, &notifications); err != nil {
		t.Fatal(err)
	}
	if payments != multiOrders || notifications != multiOrders {
		t.Errorf("ledger holds %d payments and %d notifications, want %d of each (the genuine ones)", payments, notifications, multiOrders)
	}
}

// checkRecordedOnce wants one payment, history row and notification row
// per order, and one "success" per order across the instances' metrics.
func (w *multiWorld) checkRecordedOnce(t *testing.T, orders []paidOrder, deliveries int) {
	for _, o := range orders {
		var got [3]int
		for i, table := range []string{"payments", "state_history", "notifications"} {
			q := "SELECT COUNT(*) FROM " + table + " WHERE out_trade_no = ?"
			if err := w.sqlDB.QueryRow(q, o.no).Scan(&got[i]); err != nil {
				t.Fatal(err)
			}
		}
		if got != [3]int{1, 1, 1} {
			t.Errorf("%s: payments/history/notifications = %v, want [1 1 1]", o.no, got)
		}
	}
	var success, duplicate float64
	for _, p := range w.procs {
		success += scrape(t, p.url(), `gateway_notifications_total{kind="payment",outcome="success"}`)
		duplicate += scrape(t, p.url(), `gateway_notifications_total{kind="payment",outcome="duplicate"}`)
	}
	if success != float64(len(orders)) || success+duplicate != float64(deliveries) {
		t.Errorf("success=%v duplicate=%v across instances, want %d and %d", success, duplicate,
			len(orders), deliveries-len(orders))
	}
}

// killHoldingAnAppliedConfirmation waits until instance i holds the lease
// of a confirmation the inventory has applied (its call is stalling), and
// kills it with SIGKILL: the attempt's outcome dies with it, and the job
// comes back to another instance when the lease runs out.
func (w *multiWorld) killHoldingAnAppliedConfirmation(t *testing.T, i int) {
	owner := fmt.Sprintf("%%-%d-%%", w.procs[i].cmd.Process.Pid) // worker ids are host-pid-random-wN
	waitFor(t, 20*time.Second, fmt.Sprintf("instance %d to hold an applied confirmation", i), func() bool {
		rows, err := w.sqlDB.Query("SELECT out_trade_no FROM outbox_jobs WHERE state = 'RUNNING' AND lease_owner LIKE ?", owner)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var no string
			if err := rows.Scan(&no); err != nil {
				t.Fatal(err)
			}
			if w.inv.ConfirmCount(no) == 1 {
				return true
			}
		}
		return false
	})
	w.procs[i].kill(t)
}

// restart starts instance i again on its address.
func (w *multiWorld) restart(t *testing.T, i int) {
	w.procs[i] = startProcess(t, w.bin, w.env, i, w.procs[i].addr)
	waitReady(t, w.procs[i].url())
}

// checkConfirmedOnce waits for the instances' outbox to drain, then wants
// each order confirmed once by the inventory and no confirmation sent
// again after an unclear answer (the simulator counts such replays).
func checkConfirmedOnce(t *testing.T, db *sql.DB, inv *inventorysim.Sim, orders []paidOrder) {
	t.Helper()
	waitFor(t, 30*time.Second, "the three outboxes to drain", func() bool {
		var left int
		err := db.QueryRow("SELECT COUNT(*) FROM outbox_jobs WHERE state <> 'DONE'").Scan(&left)
		return err == nil && left == 0
	})
	for _, o := range orders {
		if n := inv.ConfirmCount(o.no); n != 1 {
			t.Errorf("%s confirmed %d times by the inventory, want 1", o.no, n)
		}
	}
	st := inv.Stats()
	if st.Duplicates != 0 || st.Faults == 0 {
		t.Errorf("inventory stats %+v: want 0 duplicates, and faults injected", st)
	}
	// A confirmation sent again after a 500 (which the simulator did not
	// apply) is no duplicate, but it was still resent without asking.
	if blind := inv.ResentBlind(); len(blind) != 0 {
		t.Errorf("sent again without a query first: %v", blind)
	}
	rows, err := db.Query("SELECT DISTINCT worker FROM outbox_attempts")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	instances := map[string]bool{} // a worker id is "<instance>-w<n>"
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			t.Fatal(err)
		}
		instances[w[:strings.LastIndex(w, "-w")]] = true
	}
	if len(instances) < 2 {
		t.Errorf("outbox attempts made by %d instance(s), want the work shared: %v", len(instances), instances)
	}
}

type delivery struct {
	url string
	n   wxpaysim.Notification
}

// fired is a delivery's answer: its status and the "reason" of an error.
type fired struct {
	status int
	reason string
}

// fireAt sends every delivery at the same moment.
func fireAt(t *testing.T, ds []delivery) []fired {
	answers := make([]fired, len(ds))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := ds[i].n.Post(context.Background(), httpClient, ds[i].url)
			if err != nil {
				t.Errorf("delivery %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			var body struct {
				Reason string `json:"reason"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			answers[i] = fired{resp.StatusCode, body.Reason}
		}()
	}
	close(start)
	wg.Wait()
	return answers
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// buildGateway compiles this command once per test binary (with the race
// detector when the test has it) and returns the binary's path: the tests
// that run it share it, as a build links anew each time (seconds under
// -race). TestMain removes it.
func buildGateway(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "gwbin"); binErr == nil {
			binPath, binErr = stack.BuildGateway(context.Background(), binDir)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// instanceEnv is the configuration shared by the instances, as variables.
func instanceEnv(t *testing.T, dsn, redisAddr, prefix string) []string {
	k, dir := testKeys(t)
	var certs []string
	for _, c := range k.Certs {
		certs = append(certs, filepath.Join(dir, "platform_cert_"+c.Serial+".pem"))
	}
	cfg := testConfig(t, backend{name: "sqlite"})
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEWAY_") {
			env = append(env, kv)
		}
	}
	return append(env, "GATEWAY_DATABASE_DSN="+dsn, "GATEWAY_REDIS_ADDR="+redisAddr, "GATEWAY_REDIS_PREFIX="+prefix,
		"GATEWAY_WECHATPAY_MCHID="+k.MchID, "GATEWAY_WECHATPAY_APPID="+k.AppID,
		"GATEWAY_WECHATPAY_APIV3_KEY="+k.APIv3Key,
		"GATEWAY_WECHATPAY_PUBLIC_KEY_FILE="+filepath.Join(dir, "platform_public_key.pem"),
		"GATEWAY_WECHATPAY_PUBLIC_KEY_ID="+k.PublicKeyID,
		"GATEWAY_WECHATPAY_PLATFORM_CERT_FILES="+strings.Join(certs, ","),
		"GATEWAY_API_KEYS="+strings.Join(cfg.Auth.APIKeys, ","), "GATEWAY_LOG_LEVEL=warn",
		"GATEWAY_HTTP_NOTIFY_TIMEOUT="+cfg.HTTP.NotifyTimeout.String())
}

// proc is one gateway process started by a test.
type proc struct {
	addr   string
	cmd    *exec.Cmd
	exited chan error
	killed bool
}

func (p *proc) url() string { return "http://" + p.addr }

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.killed = true
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// startProcess runs instance i on addr; at the end of the test, unless it
// was killed, it sends SIGTERM and expects a clean exit.
func startProcess(t *testing.T, bin string, env []string, i int, addr string) *proc {
	return startProcessTo(t, bin, env, i, addr, nil)
}

// startProcessTo is startProcess with the process's stdout and stderr
// going to to, when not nil, instead of a buffer shown if it fails.
func startProcessTo(t *testing.T, bin string, env []string, i int, addr string, to *os.File) *proc {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(env, "GATEWAY_HTTP_ADDR="+addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if to != nil {
		cmd.Stdout, cmd.Stderr = to, to
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{addr: addr, cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.killed {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.exited:
			if err != nil {
				t.Errorf("instance %d exited: %v\n%s", i, err, out.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("instance %d did not stop on SIGTERM\n%s", i, out.String())
		}
	})
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// getMetrics reads base's /metrics as Prometheus does: on the gateway's
// own port it takes a metrics (or ops) key.
func getMetrics(base string) (*http.Response, error) {
	req, err := http.NewRequest("GET", base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+metricsKey)
	return httpClient.Do(req)
}

// scrape reads one sample from an instance's /metrics (0 if absent).
func scrape(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := getMetrics(base)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(raw)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
