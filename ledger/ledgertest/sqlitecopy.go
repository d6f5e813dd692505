package ledgertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
)

// The migrated SQLite database SQLiteCopyDSN copies: migrated once per
// test binary and kept open (an in-memory database lives while a
// connection holds it). Migrating takes about half a second under -race,
// and Each opens a SQLite database for every one of its hundreds of tests.
var template struct {
	once sync.Once
	dsn  string
	db   *gorm.DB
	err  error
}

// OpenSQLiteCopy is OpenSQLite on a copy of a database migrated once per
// test binary (SQLiteCopyDSN). Tests of the migrations themselves use
// OpenSQLite.
func OpenSQLiteCopy(t testing.TB) *ledger.Store {
	t.Helper()
	dsn := SQLiteCopyDSN(t)
	db, dialect, err := ledgerdb.Open(ledgerdb.Config{DSN: dsn})
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return ledger.NewStore(db, dialect)
}

// SQLiteCopyDSN names a fresh in-memory SQLite database that is a copy of
// one migrated once per test binary: the same tables, indexes and
// schema_migrations rows (TestCopyMatchesAMigratedDatabase), made in a few
// milliseconds. A connection holds it until the test ends, so it outlives
// the pools that open it (a gateway closed and started again finds it).
func SQLiteCopyDSN(t testing.TB) string {
	t.Helper()
	template.once.Do(func() {
		template.dsn = SQLiteDSN(t)
		template.db, template.err = migrated(template.dsn)
	})
	if template.err != nil {
		t.Fatalf("migrate the SQLite template: %v", template.err)
	}
	dsn := SQLiteDSN(t)
	if err := copySchema(keep(t, dsn), template.dsn); err != nil {
		t.Fatalf("copy the SQLite template: %v", err)
	}
	return dsn
}

func migrated(dsn string) (*gorm.DB, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: dsn})
	if err != nil {
		return nil, err
	}
	return db, ledger.Migrate(ctx, db, dialect)
}

// copySchema creates in db every table and index of the database at
// from, in the order they were made, and copies their rows (only
// schema_migrations has any). The store's single connection does it all:
// an attached database is the connection's.
func copySchema(db *gorm.DB, from string) error {
	return db.Connection(func(c *gorm.DB) error {
		if err := c.Exec("ATTACH DATABASE ? AS tmpl", from).Error; err != nil {
			return fmt.Errorf("attach: %w", err)
		}
		defer c.Exec("DETACH DATABASE tmpl")
		var objs []struct{ Type, Name, SQL string }
		err := c.Raw("SELECT type, name, sql FROM tmpl.sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' " +
			"ORDER BY type <> 'table', rowid").Scan(&objs).Error
		if err != nil {
			return fmt.Errorf("read schema: %w", err)
		}
		for _, o := range objs {
			if err := c.Exec(o.SQL).Error; err != nil {
				return fmt.Errorf("create %s %s: %w", o.Type, o.Name, err)
			}
			if o.Type == "table" {
				if err := c.Exec(fmt.Sprintf("INSERT INTO main.%q SELECT * FROM tmpl.%q", o.Name, o.Name)).Error; err != nil {
					return fmt.Errorf("copy rows of %s: %w", o.Name, err)
				}
			}
		}
		return nil
	})
}
