package migrations_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
	"paygateway/migrations"
)

func TestDialectsHaveSameVersions(t *testing.T) {
	my, err := migrations.List(migrations.MySQL)
	if err != nil {
		t.Fatal(err)
	}
	lite, err := migrations.List(migrations.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if len(my) != len(lite) {
		t.Fatalf("mysql has %d migrations, sqlite %d", len(my), len(lite))
	}
	for i := range my {
		if my[i].Name != lite[i].Name {
			t.Errorf("migration %d: mysql %s, sqlite %s", i, my[i].Name, lite[i].Name)
		}
		if n := len(my[i].Statements()); n != 1 {
			t.Errorf("mysql %s has %d statements, want 1 (MySQL DDL commits implicitly)", my[i].Name, n)
		}
	}
}

// TestDialectsEndWithSameSchema applies both dialects and compares tables,
// columns, which of them may be NULL (a "!" marks NOT NULL; a primary key
// is), and unique keys.
func TestDialectsEndWithSameSchema(t *testing.T) {
	lite := sqliteSchema(t, ledgertest.OpenSQLite(t).DB())
	my := mysqlSchema(t, ledgertest.OpenMySQL(t).DB())
	if strings.Join(lite, "\n") != strings.Join(my, "\n") {
		t.Fatalf("schemas differ\nsqlite:\n%s\n\nmysql:\n%s", strings.Join(lite, "\n"), strings.Join(my, "\n"))
	}
	if len(lite) < 4 {
		t.Fatalf("schema looks empty: %v", lite)
	}
}

func sqliteSchema(t *testing.T, db *gorm.DB) []string {
	var tables []string
	db.Raw("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'").Scan(&tables)
	var out []string
	for _, tbl := range tables {
		var cols []struct {
			Name        string
			NotNull, PK int
		}
		db.Raw("SELECT name, \"notnull\" AS not_null, pk FROM pragma_table_xinfo(?)", tbl).Scan(&cols) // xinfo: generated columns too
		names := make([]string, len(cols))
		for i, c := range cols {
			names[i] = c.Name + notNullMark(c.NotNull == 1 || c.PK > 0)
		}
		out = append(out, describe(tbl, names))
		var idx []struct {
			Name   string
			Unique int
		}
		db.Raw(`SELECT name, "unique" FROM pragma_index_list(?)`, tbl).Scan(&idx)
		for _, ix := range idx {
			if ix.Unique == 1 && !strings.HasPrefix(ix.Name, "sqlite_autoindex") {
				var ic []string
				db.Raw("SELECT name FROM pragma_index_info(?) ORDER BY seqno", ix.Name).Scan(&ic)
				out = append(out, fmt.Sprintf("unique %s(%s)", tbl, strings.Join(ic, ",")))
			}
		}
	}
	sort.Strings(out)
	return out
}

func mysqlSchema(t *testing.T, db *gorm.DB) []string {
	var cols []struct{ TableName, ColumnName, IsNullable string }
	db.Raw(`SELECT table_name AS table_name, column_name AS column_name, is_nullable AS is_nullable
		FROM information_schema.columns WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position`).Scan(&cols)
	byTable := map[string][]string{}
	for _, c := range cols {
		byTable[c.TableName] = append(byTable[c.TableName], c.ColumnName+notNullMark(c.IsNullable == "NO"))
	}
	var out []string
	for tbl, names := range byTable {
		out = append(out, describe(tbl, names))
	}
	var idx []struct{ TableName, IndexName, Cols string }
	db.Raw(`SELECT table_name AS table_name, index_name AS index_name,
		GROUP_CONCAT(column_name ORDER BY seq_in_index) AS cols
		FROM information_schema.statistics WHERE table_schema = DATABASE() AND non_unique = 0 AND index_name <> 'PRIMARY'
		GROUP BY table_name, index_name`).Scan(&idx)
	for _, ix := range idx {
		out = append(out, fmt.Sprintf("unique %s(%s)", ix.TableName, ix.Cols))
	}
	sort.Strings(out)
	return out
}

func notNullMark(notNull bool) string {
	if notNull {
		return "!"
	}
	return ""
}

func describe(table string, cols []string) string {
	sorted := append([]string(nil), cols...)
	sort.Strings(sorted)
	return fmt.Sprintf("table %s(%s)", table, strings.Join(sorted, ","))
}

// TestInterruptedMySQLMigrationReruns: MySQL commits each DDL statement by
// itself, so a run killed between a statement and its version row leaves
// the table, column or index there unrecorded; the next start applies the
// rest instead of failing on "already exists" until fixed by hand.
func TestInterruptedMySQLMigrationReruns(t *testing.T) {
	db := ledgertest.OpenMySQL(t).DB()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	// Two versions unrecorded cannot come from one cut-short run: the
	// second "already exists" is a real conflict and stops the run.
	if err := db.Exec("DELETE FROM schema_migrations WHERE version IN (35, 36)").Error; err != nil {
		t.Fatal(err)
	}
	if err := migrations.Apply(context.Background(), sqlDB, migrations.MySQL); err == nil || !strings.Contains(err.Error(), "0036") {
		t.Fatalf("a conflict past the first pending migration: err = %v, want it to stop at 0036", err)
	}
	if err := migrations.Apply(context.Background(), sqlDB, migrations.MySQL); err != nil {
		t.Fatalf("rerun after an interrupted run: %v", err)
	}
	if n, err := migrations.Pending(context.Background(), sqlDB, migrations.MySQL); err != nil || n != 0 {
		t.Fatalf("pending after the rerun: %d, %v", n, err)
	}
	// A DROP INDEX (0048) that committed before its version row did.
	if err := db.Exec("DELETE FROM schema_migrations WHERE version = 48").Error; err != nil {
		t.Fatal(err)
	}
	if err := migrations.Apply(context.Background(), sqlDB, migrations.MySQL); err != nil {
		t.Fatalf("rerun after an interrupted DROP INDEX: %v", err)
	}
}

// unapplyColumn takes migration 0037 (a column on payments) back out, so
// that the next run has a DDL statement on a busy table to apply.
func unapplyColumn(t *testing.T, db *gorm.DB) {
	t.Helper()
	for _, q := range []string{"ALTER TABLE payments DROP COLUMN registered_openid",
		"DELETE FROM schema_migrations WHERE version = 37"} {
		if err := db.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
}

// TestDDLWaitsBoundedForItsTable: a migration whose table is held by an
// open transaction (a long export, say) gives up after a few seconds with
// a clear error, rather than waiting a day while every query on the table
// queues behind it; once the transaction ends, the next run applies it.
func TestDDLWaitsBoundedForItsTable(t *testing.T) {
	db := ledgertest.OpenMySQL(t).DB()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	unapplyColumn(t, db)
	ctx := context.Background()
	tx, err := sqlDB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "SELECT COUNT(*) FROM payments"); err != nil {
		t.Fatal(err)
	}
	err = migrations.Apply(ctx, sqlDB, migrations.MySQL)
	if err == nil || !strings.Contains(err.Error(), "holds the table") {
		t.Fatalf("DDL on a table held by a transaction: err = %v, want it refused as held", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Apply(ctx, sqlDB, migrations.MySQL); err != nil {
		t.Fatalf("rerun once the table is free: %v", err)
	}
	if n, err := migrations.Pending(ctx, sqlDB, migrations.MySQL); err != nil || n != 0 {
		t.Fatalf("pending after the rerun: %d, %v", n, err)
	}
}

// TestPendingCountsOwnMigrations: a version the binary does not know (a
// newer release ran) does not hide one of its own that is missing.
func TestPendingCountsOwnMigrations(t *testing.T) {
	db := ledgertest.OpenMySQL(t).DB()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	unapplyColumn(t, db)
	if err := db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_newer', 'x')").Error; err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if n, err := migrations.Pending(ctx, sqlDB, migrations.MySQL); err != nil || n != 1 {
		t.Fatalf("pending with 0037 missing and an unknown 9999: %d, %v; want 1", n, err)
	}
	if err := migrations.Apply(ctx, sqlDB, migrations.MySQL); err != nil {
		t.Fatal(err)
	}
	if n, err := migrations.Pending(ctx, sqlDB, migrations.MySQL); err != nil || n != 0 {
		t.Fatalf("pending after applying: %d, %v", n, err)
	}
}

// TestPendingOnANewDatabase: a database never migrated lacks every
// migration (and asking changes nothing: no schema_migrations table).
func TestPendingOnANewDatabase(t *testing.T) {
	for _, c := range []struct {
		dsn string
		d   migrations.Dialect
	}{{ledgertest.MySQLDSN(t), migrations.MySQL}, {ledgertest.SQLiteDSN(t), migrations.SQLite}} {
		db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: c.dsn})
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB()
		all, _ := migrations.List(c.d)
		if n, err := migrations.Pending(context.Background(), sqlDB, c.d); err != nil || n != len(all) {
			t.Errorf("%s: pending %d, %v; want %d", c.d, n, err, len(all))
		}
		if db.Migrator().HasTable("schema_migrations") {
			t.Errorf("%s: asking created schema_migrations", c.d)
		}
		sqlDB.Close()
	}
}

// TestMigrationLockIsPerDatabase: GET_LOCK names are the server's, so the
// migration lock names the database: a migration of another database on
// the same server (staging beside production) does not hold this one's,
// and one of this database does.
func TestMigrationLockIsPerDatabase(t *testing.T) {
	db := ledgertest.OpenMySQL(t).DB()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	unapplyColumn(t, db)
	var name string
	if err := db.Raw("SELECT DATABASE()").Scan(&name).Error; err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	holder, err := sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	hold := func(lock string) {
		var got int
		if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK(?, 1)", lock).Scan(&got); err != nil || got != 1 {
			t.Fatalf("hold %s: %d, %v", lock, got, err)
		}
	}
	hold("gateway_migrate")                 // the name before it carried the database
	hold("gw_migrate:" + name + "_staging") // another database's
	if err := migrations.Apply(ctx, sqlDB, migrations.MySQL); err != nil {
		t.Fatalf("another database's migration lock held: %v", err)
	}
	unapplyColumn(t, db)
	hold("gw_migrate:" + name)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := migrations.Apply(short, sqlDB, migrations.MySQL); err == nil {
		t.Fatal("this database's migration lock held by another session: the migration ran anyway")
	}
}

// TestMoneyUniqueKeys: the unique keys that are the last guard of every
// effect (README: Redis and the lookups before an insert only speed
// things up) exist in both dialects. The lookups hide a lost key from
// every other test: out_refund_no is read under the order's row lock
// before its insert, so only two orders given the same number at once
// (on MySQL) would meet the key, and a migration dropping it from both
// dialects passed TestDialectsEndWithSameSchema and every ledger test.
func TestMoneyUniqueKeys(t *testing.T) {
	want := []string{
		"unique payments(out_trade_no)", "unique payments(transaction_id)",
		"unique notifications(notify_id)",
		"unique refunds(out_refund_no)", "unique refunds(refund_id)",
		"unique idempotency_keys(scope,idem_key)",
		"unique outbox_jobs(job_key)",
		"unique state_history(entity,entity_key,to_state)",
		"unique anomalies(kind,ref)",
	}
	for name, schema := range map[string][]string{
		"sqlite": sqliteSchema(t, ledgertest.OpenSQLite(t).DB()),
		"mysql":  mysqlSchema(t, ledgertest.OpenMySQL(t).DB()),
	} {
		for _, key := range want {
			found := false
			for _, line := range schema {
				found = found || line == key
			}
			if !found {
				t.Errorf("%s: no %s", name, key)
			}
		}
	}
}
