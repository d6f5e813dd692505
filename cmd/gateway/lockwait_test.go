package main

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRowLockWaitEndsOnTheServer: a statement of the gateway's pool that
// waits for a row lock gives up on the server after
// database.lock_wait_timeout, even when nothing cancels it (a cancelled
// context only closes the client's socket and leaves the wait, and the
// locks already held, on the server for 50 s).
func TestRowLockWaitEndsOnTheServer(t *testing.T) {
	cfg := testConfig(t, backend{name: "mysql", mysql: true})
	cfg.Database.LockWaitTimeout = time.Second
	m := startGateway(t, cfg)
	k, _ := testKeys(t)
	no := uniqueNo("lockwait")
	if status, body := post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(paidTx(k, no, 100),
		wxpaysim.PublicKeyMode(), time.Now()))); status != 204 {
		t.Fatalf("notification: %d %v", status, body)
	}
	other, err := sql.Open("mysql", strings.TrimPrefix(cfg.Database.DSN, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	holder, err := other.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if _, err := holder.ExecContext(ctx, "SELECT id FROM payments WHERE out_trade_no = ? FOR UPDATE", no); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = m.Store.DB().WithContext(ctx).Exec("UPDATE payments SET updated_at = updated_at WHERE out_trade_no = ?", no).Error
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "1205") {
		t.Fatalf("waiting for a held row lock: err=%v after %v, want MySQL error 1205", err, took)
	}
	if took > 5*time.Second {
		t.Fatalf("the wait took %v with lock_wait_timeout 1s", took)
	}
}

// TestStatementEndsOnTheServer: a statement of the gateway's pool that
// runs past database.statement_timeout is ended by the server, even when
// nothing cancels it (a client that gives up only closes its socket, and
// an abandoned scan would go on taking the server's time).
func TestStatementEndsOnTheServer(t *testing.T) {
	cfg := testConfig(t, backend{name: "mysql", mysql: true})
	cfg.Database.StatementTimeout = time.Second
	m := startGateway(t, cfg)
	start := time.Now()
	var slept int
	err := m.Store.DB().WithContext(context.Background()).Raw("SELECT SLEEP(5)").Scan(&slept).Error
	took := time.Since(start)
	// MariaDB 10.11 ends it with error 1969; MySQL (and some MariaDB
	// versions) end a SLEEP early with 1, "interrupted".
	if cut := err == nil && slept == 1 || err != nil && strings.Contains(err.Error(), "1969"); !cut {
		t.Fatalf("SELECT SLEEP(5): err=%v (slept=%d) after %v, want it ended by max_statement_time", err, slept, took)
	}
	if took > 4*time.Second {
		t.Fatalf("the statement ran %v with statement_timeout 1s", took)
	}
}

// TestNotificationsHaveConnectionsOfTheirOwn: with every connection of the
// gateway's main pool busy (a flood of order registrations or refund
// requests on a slow database), a payment notification still gets a
// connection and commits within WeChat Pay's wait.
func TestNotificationsHaveConnectionsOfTheirOwn(t *testing.T) {
	cfg := testConfig(t, backend{name: "mysql", mysql: true})
	// A small budget: the server's max_connections is shared with the
	// other test packages.
	cfg.Auth.MaxKeyLookups, cfg.Finance.MaxRequests, cfg.Outbox.Workers = 1, 1, 0
	cfg.Database.MaxOpenConns = 1 + gateway.KnownKeySlots + 1 + cfg.notifyPool() + mainReserve
	m := startGateway(t, cfg)
	sqlDB, err := m.Store.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	busy := sqlDB.Stats().MaxOpenConnections
	for range busy { // every connection of the main pool checked out, as by slow requests
		conn, err := sqlDB.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	probe, pcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer pcancel()
	if err := m.Store.DB().WithContext(probe).Exec("SELECT 1").Error; err == nil {
		t.Fatalf("the main pool (%d connections) still had one free", busy)
	}
	k, _ := testKeys(t)
	no := uniqueNo("ownpool")
	start := time.Now()
	status, body := post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(paidTx(k, no, 100),
		wxpaysim.PublicKeyMode(), time.Now())))
	if status != 204 {
		t.Fatalf("notification with the main pool busy (%d connections): %d %v after %v, want 204", busy, status, body, time.Since(start))
	}
}
