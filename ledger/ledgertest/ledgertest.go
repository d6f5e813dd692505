// Package ledgertest opens throwaway, migrated ledger databases for tests:
// a fresh MariaDB/MySQL database per call when GATEWAY_TEST_MYSQL_DSN is
// set, and a named in-memory SQLite database otherwise.
package ledgertest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/gorm"

	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
)

// Each runs fn against SQLite and, when configured, MySQL, as subtests.
// The SQLite database is a copy of one migrated once (OpenSQLiteCopy).
func Each(t *testing.T, fn func(t *testing.T, s *ledger.Store)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, OpenSQLiteCopy(t)) })
	t.Run("mysql", func(t *testing.T) { fn(t, OpenMySQL(t)) })
}

// OpenSQLite returns a store on a fresh, migrated in-memory SQLite database.
// A second pool holds a connection to it for the test's life: a shared
// in-memory database is gone once its last connection closes, and the
// store's one connection is closed when a query is cancelled under it.
func OpenSQLite(t testing.TB) *ledger.Store {
	t.Helper()
	dsn := SQLiteDSN(t)
	keep(t, dsn)
	return open(t, dsn)
}

// keep holds a connection to the in-memory SQLite database dsn until the
// test ends, and returns its pool.
func keep(t testing.TB, dsn string) *gorm.DB {
	t.Helper()
	keeper, _, err := ledgerdb.Open(ledgerdb.Config{DSN: dsn})
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	keeperDB, _ := keeper.DB()
	if err := keeperDB.Ping(); err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { keeperDB.Close() })
	return keeper
}

// SQLiteDSN names a fresh in-memory SQLite database, shared by the
// connections of one pool (a plain :memory: is new per connection).
func SQLiteDSN(t testing.TB) string {
	return "file:" + randomName("mem") + "?mode=memory&cache=shared"
}

// OpenMySQL returns a store on a fresh, migrated MySQL database that is
// dropped when the test ends. Without a reachable server it skips, or
// fails when CI=true.
func OpenMySQL(t testing.TB) *ledger.Store {
	t.Helper()
	return open(t, MySQLDSN(t))
}

// MySQLDSN creates an empty database and returns its "mysql://" DSN.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("GATEWAY_TEST_MYSQL_DSN")
	if base == "" {
		unavailable(t, "GATEWAY_TEST_MYSQL_DSN is not set")
	}
	cfg, err := mysqldrv.ParseDSN(strings.TrimPrefix(base, "mysql://"))
	if err != nil {
		t.Fatalf("parse GATEWAY_TEST_MYSQL_DSN: %v", err)
	}
	name := randomName("gwtest")
	admin := openAdmin(t, cfg)
	if _, err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		admin.Close()
	})
	cfg.DBName = name
	return "mysql://" + cfg.FormatDSN()
}

func openAdmin(t testing.TB, cfg *mysqldrv.Config) *sql.DB {
	t.Helper()
	c := cfg.Clone()
	c.DBName = ""
	c.Timeout = 3 * time.Second
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		t.Fatalf("open mysql: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		unavailable(t, fmt.Sprintf("mysql at %s unreachable: %v", c.Addr, err))
	}
	return db
}

func open(t testing.TB, dsn string) *ledger.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: dsn})
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	if err := ledger.Migrate(ctx, db, dialect); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return ledger.NewStore(db, dialect)
}

// unavailable skips a test that needs an absent server, except on CI,
// where the servers must be there and their absence is a failure.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but %s", why)
	}
	t.Skipf("skipping: %s", why)
}

// Unavailable is unavailable for other test helpers (Redis).
func Unavailable(t testing.TB, why string) { unavailable(t, why) }

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "_" + hex.EncodeToString(b)
}
