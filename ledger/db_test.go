package ledger_test

import (
	"context"
	"strings"
	"testing"

	"paygateway/ledger/ledgertest"
)

// TestMySQLSessionIsReadCommitted: locked reads and unique-key waits are
// reasoned about under READ COMMITTED (no gap locks).
func TestMySQLSessionIsReadCommitted(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	var level string
	if err := s.DB().Raw("SELECT @@SESSION.tx_isolation").Scan(&level).Error; err != nil {
		if err := s.DB().Raw("SELECT @@SESSION.transaction_isolation").Scan(&level).Error; err != nil {
			t.Fatal(err)
		}
	}
	if level != "READ-COMMITTED" {
		t.Fatalf("isolation = %q, want READ-COMMITTED", level)
	}
}

// TestReadOnlyDatabaseIsNotReady: a MySQL server switched to read-only
// (a demoted primary) answers pings and reads, but the gateway's user
// cannot write there: the store is not ready. (The tests' root user keeps
// writing under read_only, so other tests are not disturbed.)
func TestReadOnlyDatabaseIsNotReady(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("writable database: %v", err)
	}
	if err := s.DB().Exec("SET GLOBAL read_only = 1").Error; err != nil {
		t.Fatal(err)
	}
	defer s.DB().Exec("SET GLOBAL read_only = 0")
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("read-only database: Ping = %v, want not ready", err)
	}
}

// TestMySQLSessionIsStrict: whatever the server's default sql_mode, the
// ledger's connections refuse a value too long for its column instead of
// cutting it (two distinct keys cut to one would collide, or be merged).
// The server's default is made non-strict for a moment; connections opened
// meanwhile by other tests' stores are strict all the same.
func TestMySQLSessionIsStrict(t *testing.T) {
	admin := ledgertest.OpenMySQL(t)
	var global string
	if err := admin.DB().Raw("SELECT @@GLOBAL.sql_mode").Scan(&global).Error; err != nil {
		t.Fatal(err)
	}
	if err := admin.DB().Exec("SET GLOBAL sql_mode = ''").Error; err != nil {
		t.Fatal(err)
	}
	s := ledgertest.OpenMySQL(t)
	var mode string
	err := s.DB().Raw("SELECT @@SESSION.sql_mode").Scan(&mode).Error
	if rerr := admin.DB().Exec("SET GLOBAL sql_mode = ?", global).Error; rerr != nil {
		t.Fatalf("restore the server's sql_mode %q: %v", global, rerr)
	}
	if err != nil || !strings.Contains(mode, "STRICT_TRANS_TABLES") {
		t.Fatalf("session sql_mode %q (%v) under a non-strict server, want STRICT_TRANS_TABLES", mode, err)
	}
}
