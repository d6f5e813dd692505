package main

import (
	"context"
	"testing"
	"time"

	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// TestMigrationOutlastsTheReadTimeout: a migration statement may be
// silent for longer than database.read_timeout (an index build on a big
// table is, for minutes). Here a column waits 2 s for a table another
// transaction holds, with a 1 s read timeout: it is applied, because
// migrations run on a connection bounded by the migration's own limit.
func TestMigrationOutlastsTheReadTimeout(t *testing.T) {
	d := DatabaseConfig{DSN: ledgertest.MySQLDSN(t), ReadTimeout: time.Second}
	ctx := context.Background()
	if err := applyMigrations(ctx, d, time.Minute); err != nil {
		t.Fatal(err)
	}
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: d.DSN})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	for _, q := range []string{"ALTER TABLE payments DROP COLUMN registered_openid",
		"DELETE FROM schema_migrations WHERE version = 37"} {
		if _, err := sqlDB.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := sqlDB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("SELECT COUNT(*) FROM payments"); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(2*time.Second, func() { _ = tx.Rollback() })
	if err := applyMigrations(ctx, d, time.Minute); err != nil {
		t.Fatalf("a migration waiting 2 s with a 1 s read timeout: %v", err)
	}
	var n int
	if err := sqlDB.QueryRow("SELECT COUNT(*) FROM schema_migrations WHERE version = 37").Scan(&n); err != nil || n != 1 {
		t.Fatalf("0037 recorded %d times (%v), want 1", n, err)
	}
}
