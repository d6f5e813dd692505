package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"net"
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
// GATEWAY_* variables), delivers every notification to all three at once
// with duplicates, and checks the money invariants: one payment, one
// history row and one notification row per order, every delivery
// answered 204, exactly one "success" per order across the instances.
// The three instances' outbox workers then deliver the stock
// confirmations to an inventory service that fails 30% of calls and
// applies-then-stalls 20%: every order is confirmed exactly once, and no
// confirmation is ever sent twice (each retry asked first).
func TestThreeInstancesOneLedger(t *testing.T) {
	dsn := ledgertest.MySQLDSN(t)
	rc := redistest.Config(t)
	bin := buildGateway(t)
	inv, invURL := startInventory(t)
	inv.SetFaults(inventorysim.Faults{ErrorRate: 0.3, ApplyThenTimeoutRate: 0.2, ApplyThenTimeoutDelay: 600 * time.Millisecond})
	env := append(instanceEnv(t, dsn, rc.Addr, rc.Prefix), "GATEWAY_INVENTORY_BASE_URL="+invURL,
		"GATEWAY_INVENTORY_TIMEOUT=300ms", "GATEWAY_OUTBOX_WORKERS=4", "GATEWAY_OUTBOX_BATCH=5",
		"GATEWAY_OUTBOX_POLL_INTERVAL=20ms", "GATEWAY_OUTBOX_LEASE=3s", "GATEWAY_OUTBOX_INITIAL_INTERVAL=20ms",
		"GATEWAY_OUTBOX_MAX_INTERVAL=200ms", "GATEWAY_OUTBOX_MAX_ELAPSED=1m")
	var urls []string
	for i := 0; i < 3; i++ {
		urls = append(urls, startProcess(t, bin, env, i))
	}
	for _, u := range urls {
		waitReady(t, u)
	}

	k, _ := testKeys(t)
	var orders []string
	var deliveries []delivery
	for i := 0; i < 8; i++ {
		no := uniqueNo("multi")
		orders = append(orders, no)
		n := good(t, k, no)
		for j, u := range urls {
			for c := 0; c < 2; c++ {
				mode := wxpaysim.PublicKeyMode()
				if c == 1 {
					mode = wxpaysim.CertMode(j % 2)
				}
				deliveries = append(deliveries, delivery{u + paymentPath, mustNotification(n.Resign(k, mode, time.Now()))})
			}
		}
	}
	for i, s := range fireAt(t, deliveries) {
		if s != 204 {
			t.Errorf("delivery %d to %s: status=%d, want 204", i, deliveries[i].url, s)
		}
	}

	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	for _, no := range orders {
		var got [3]int64
		for i, table := range []string{"payments", "state_history", "notifications"} {
			if err := db.Table(table).Where("out_trade_no = ?", no).Count(&got[i]).Error; err != nil {
				t.Fatal(err)
			}
		}
		if got != [3]int64{1, 1, 1} {
			t.Errorf("%s: payments/history/notifications = %v, want [1 1 1]", no, got)
		}
	}
	checkConfirmedOnce(t, sqlDB, inv, orders)
	var success, duplicate float64
	for _, u := range urls {
		success += scrape(t, u, `gateway_notifications_total{kind="payment",outcome="success"}`)
		duplicate += scrape(t, u, `gateway_notifications_total{kind="payment",outcome="duplicate"}`)
	}
	if success != float64(len(orders)) || success+duplicate != float64(len(deliveries)) {
		t.Errorf("success=%v duplicate=%v across instances, want %d and %d", success, duplicate,
			len(orders), len(deliveries)-len(orders))
	}
}

// checkConfirmedOnce waits for the instances' outbox to drain, then wants
// each order confirmed once by the inventory and no confirmation sent
// again after an unclear answer (the simulator counts such replays).
func checkConfirmedOnce(t *testing.T, db *sql.DB, inv *inventorysim.Sim, orders []string) {
	t.Helper()
	waitFor(t, 30*time.Second, "the three outboxes to drain", func() bool {
		var left int
		err := db.QueryRow("SELECT COUNT(*) FROM outbox_jobs WHERE state <> 'DONE'").Scan(&left)
		return err == nil && left == 0
	})
	for _, no := range orders {
		if n := inv.ConfirmCount(no); n != 1 {
			t.Errorf("%s confirmed %d times by the inventory, want 1", no, n)
		}
	}
	st := inv.Stats()
	if st.Duplicates != 0 || st.Faults == 0 {
		t.Errorf("inventory stats %+v: want 0 duplicates, and faults injected", st)
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

// fireAt sends every delivery at the same moment.
func fireAt(t *testing.T, ds []delivery) []int {
	statuses := make([]int, len(ds))
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
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	return statuses
}

// buildGateway compiles this command into the test's temp dir (with the
// race detector when the test has it).
func buildGateway(t *testing.T) string {
	t.Helper()
	bin, err := stack.BuildGateway(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
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
		"GATEWAY_API_KEYS="+strings.Join(cfg.Auth.APIKeys, ","), "GATEWAY_LOG_LEVEL=warn")
}

// startProcess runs one instance on a free port; at the end of the test
// it sends SIGTERM and expects a clean exit.
func startProcess(t *testing.T, bin string, env []string, i int) string {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(env, "GATEWAY_HTTP_ADDR="+addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("instance %d exited: %v\n%s", i, err, out.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("instance %d did not stop on SIGTERM\n%s", i, out.String())
		}
	})
	return "http://" + addr
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

// scrape reads one sample from an instance's /metrics (0 if absent).
func scrape(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := httpClient.Get(base + "/metrics")
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
