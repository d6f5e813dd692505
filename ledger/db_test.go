package ledger_test

import (
	"context"
	"strings"
	"testing"

	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
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
// cannot write there: the store is not ready.
//
// On a server of its own: SET GLOBAL read_only on the shared test server
// waits for the transactions every other test package has open, and
// holds up their new ones meanwhile (seen: 30 s, with "invalid
// connection" in another package); when its client gave up, the server
// still went read-only and stayed so, failing every gateway's /readyz
// on it from then on.
func TestReadOnlyDatabaseIsNotReady(t *testing.T) {
	srv, s := privateStore(t)
	ctx := context.Background()
	if err := ledger.Migrate(ctx, s.DB(), s.Dialect()); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("writable database: %v", err)
	}
	srv.Exec(t, "SET GLOBAL read_only = 1")
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("read-only database: Ping = %v, want not ready", err)
	}
}

// TestMySQLSessionIsStrict: whatever the server's default sql_mode, the
// ledger's connections refuse a value too long for its column instead of
// cutting it (two distinct keys cut to one would collide, or be merged).
// On a server of its own, made non-strict for good: a global sql_mode
// set on the shared test server would reach every connection other
// packages open meanwhile, and stay if the test failed before putting
// it back.
func TestMySQLSessionIsStrict(t *testing.T) {
	srv := ledgertest.StartTLSMariaDB(t)
	srv.Exec(t, "SET GLOBAL sql_mode = ''", "CREATE DATABASE ledger")
	s := openPrivate(t, srv)
	var mode string
	if err := s.DB().Raw("SELECT @@SESSION.sql_mode").Scan(&mode).Error; err != nil || !strings.Contains(mode, "STRICT_TRANS_TABLES") {
		t.Fatalf("session sql_mode %q (%v) under a non-strict server, want STRICT_TRANS_TABLES", mode, err)
	}
}

// privateStore starts a MariaDB of the test's own (see
// ledgertest.StartTLSMariaDB) and opens a store on an empty database
// there, for tests that change the server's global settings.
func privateStore(t *testing.T) (ledgertest.TLSMariaDB, *ledger.Store) {
	t.Helper()
	srv := ledgertest.StartTLSMariaDB(t)
	srv.Exec(t, "CREATE DATABASE ledger")
	return srv, openPrivate(t, srv)
}

// openPrivate opens a store on database ledger of srv, over TLS.
func openPrivate(t *testing.T, srv ledgertest.TLSMariaDB) *ledger.Store {
	t.Helper()
	db, dialect, err := ledgerdb.Open(ledgerdb.Config{DSN: "mysql://root@tcp(" + srv.Addr + ")/ledger", TLSCAFile: srv.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return ledger.NewStore(db, dialect)
}
