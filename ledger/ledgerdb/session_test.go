package ledgerdb_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/gorm"

	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// openMySQL opens a fresh MySQL test database whose DSN carries params.
func openMySQL(t *testing.T, params map[string]string) *gorm.DB {
	t.Helper()
	cfg, err := mysqldrv.ParseDSN(strings.TrimPrefix(ledgertest.MySQLDSN(t), "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Params = params
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: "mysql://" + cfg.FormatDSN()})
	if err != nil {
		t.Fatalf("open with %v: %v", params, err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

// TestDSNModeStaysStrict: a DSN's own sql_mode, even an empty one, does
// not turn strict mode off: STRICT_TRANS_TABLES is added to it, its own
// modes stay, and a value too long for its column is refused, not cut.
func TestDSNModeStaysStrict(t *testing.T) {
	cases := []struct{ dsnMode, want string }{
		{"''", ""},
		{"'ANSI_QUOTES'", "ANSI_QUOTES"},
		{"ANSI_QUOTES", "ANSI_QUOTES"},
		{"'NO_ZERO_DATE,ANSI_QUOTES'", "NO_ZERO_DATE"},
		{"DEFAULT", ""},
	}
	for _, c := range cases {
		t.Run(c.dsnMode, func(t *testing.T) {
			ctx := context.Background()
			sqlDB, _ := openMySQL(t, map[string]string{"sql_mode": c.dsnMode}).DB()
			conn, err := sqlDB.Conn(ctx) // one session: the temporary table is its own
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var mode string
			if err := conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil {
				t.Fatal(err)
			}
			modes := "," + mode + ","
			kept := c.want == "" || strings.Contains(modes, ","+c.want+",")
			if !kept || !strings.Contains(modes, ",STRICT_TRANS_TABLES,") {
				t.Fatalf("sql_mode %s in the DSN: session sql_mode %q, want STRICT_TRANS_TABLES and %s", c.dsnMode, mode, c.want)
			}
			if _, err := conn.ExecContext(ctx, "CREATE TEMPORARY TABLE short_col (v VARCHAR(2)) ENGINE=InnoDB"); err != nil {
				t.Fatal(err)
			}
			_, err = conn.ExecContext(ctx, "INSERT INTO short_col (v) VALUES ('abc')")
			if me := (*mysqldrv.MySQLError)(nil); !errors.As(err, &me) || me.Number != 1406 {
				t.Fatalf("a value too long for its column: err = %v, want error 1406 (data too long)", err)
			}
		})
	}
}

// TestDSNModeInAnyCaseStaysStrict: MySQL's variable names ignore case. A
// DSN's SQL_MODE=” used to stay beside the sql_mode the gateway sets,
// and the driver sends both in one SET in map order, so about half the
// connections ran without strict mode. Every fresh connection is strict.
func TestDSNModeInAnyCaseStaysStrict(t *testing.T) {
	ctx := context.Background()
	for _, key := range []string{"SQL_MODE", "Sql_Mode"} {
		t.Run(key, func(t *testing.T) {
			sqlDB, _ := openMySQL(t, map[string]string{key: "''"}).DB()
			sqlDB.SetMaxIdleConns(0) // a new session (and SET) per connection
			for i := 0; i < 20; i++ {
				conn, err := sqlDB.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var mode string
				err = conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&mode)
				conn.Close()
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(","+mode+",", ",STRICT_TRANS_TABLES,") {
					t.Fatalf("connection %d: DSN %s='': session sql_mode %q, not strict", i, key, mode)
				}
			}
		})
	}
	cfg, err := mysqldrv.ParseDSN(strings.TrimPrefix(ledgertest.MySQLDSN(t), "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Params = map[string]string{"sql_mode": "ANSI", "SQL_MODE": "''"}
	if _, _, err := ledgerdb.Open(ledgerdb.Config{DSN: "mysql://" + cfg.FormatDSN()}); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Fatalf("a DSN setting sql_mode in two spellings: %v, want a refusal", err)
	}
}

// TestDriverCutsTimesToMicroseconds: a time the ledger did not cut
// reaches MySQL cut to the microsecond, not for MySQL 8 to round into
// the next second.
func TestDriverCutsTimesToMicroseconds(t *testing.T) {
	db := openMySQL(t, nil)
	at := time.Date(2026, 11, 23, 15, 59, 59, 999_999_600, time.UTC)
	var sent string
	if err := db.Raw("SELECT CAST(? AS CHAR)", at).Scan(&sent).Error; err != nil {
		t.Fatal(err)
	}
	if want := "2026-11-23 15:59:59.999999"; sent != want {
		t.Fatalf("the driver sent %q, want %q", sent, want)
	}
}

// TestGormClockInMicroseconds: gorm's clock, which fills created_at and
// updated_at it is not given, keeps no finer time than DATETIME(6).
func TestGormClockInMicroseconds(t *testing.T) {
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: ledgertest.SQLiteDSN(t)})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	for range 5 { // a nanosecond reading is a whole microsecond once in a thousand
		if now := db.NowFunc(); now.Nanosecond()%1000 != 0 || now.Location() != time.UTC {
			t.Fatalf("gorm's clock reads %v, want UTC to the microsecond", now)
		}
	}
}

// TestDSNCannotCountMatchedRows: an UPDATE that changes nothing reports
// 0 rows affected even when the DSN asks the driver to count matched
// rows (clientFoundRows=true): the ledger reads that 0 as "already done".
func TestDSNCannotCountMatchedRows(t *testing.T) {
	ctx := context.Background()
	conn := openSession(t, func(c *mysqldrv.Config) { c.ClientFoundRows = true })
	for _, q := range []string{"CREATE TEMPORARY TABLE found_rows (v INT)", "INSERT INTO found_rows (v) VALUES (1)"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	res, err := conn.ExecContext(ctx, "UPDATE found_rows SET v = 1 WHERE v = 1")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 0 {
		t.Fatalf("an UPDATE changing nothing, DSN clientFoundRows=true: %d rows affected, want 0", n)
	}
}

// TestPoolClosesIdleConnections: the pool closes a connection idle
// longer than ConnMaxIdleTime, so one a firewall dropped silently is not
// handed to a request.
func TestPoolClosesIdleConnections(t *testing.T) {
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: ledgertest.MySQLDSN(t), ConnMaxIdleTime: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	if err := sqlDB.Ping(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for sqlDB.Stats().MaxIdleTimeClosed == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no idle connection closed 10 s after ConnMaxIdleTime 50 ms: %+v", sqlDB.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDSNCannotLetTheServerReadFiles: a DSN's allowAllFiles=true would let
// the server (or anyone in between, without TLS) ask for any file this
// process can read, the merchant's private key included, through LOAD
// DATA LOCAL INFILE; the ledger loads no file, so the driver sends none.
func TestDSNCannotLetTheServerReadFiles(t *testing.T) {
	ctx := context.Background()
	conn := openSession(t, func(c *mysqldrv.Config) { c.AllowAllFiles = true })
	if _, err := conn.ExecContext(ctx, "CREATE TEMPORARY TABLE loaded (v TEXT)"); err != nil {
		t.Fatal(err)
	}
	secret := t.TempDir() + "/secret.pem"
	if err := os.WriteFile(secret, []byte("PRIVATE"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := conn.ExecContext(ctx, "LOAD DATA LOCAL INFILE '"+secret+"' INTO TABLE loaded")
	var n int
	if qerr := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM loaded").Scan(&n); qerr != nil {
		t.Fatal(qerr)
	}
	if err == nil || n != 0 {
		t.Fatalf("LOAD DATA LOCAL INFILE with allowAllFiles=true in the DSN: err %v, %d rows loaded; want it refused", err, n)
	}
}

// openSession opens the ledger on a fresh MySQL test database whose DSN
// set changes, and returns one session of it (a temporary table is its
// own), closed when the test ends.
func openSession(t *testing.T, set func(*mysqldrv.Config)) *sql.Conn {
	t.Helper()
	cfg, err := mysqldrv.ParseDSN(strings.TrimPrefix(ledgertest.MySQLDSN(t), "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	set(cfg)
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: "mysql://" + cfg.FormatDSN()})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
