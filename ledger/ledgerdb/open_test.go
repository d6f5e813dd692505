package ledgerdb

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// TestSessionFallbacks: a server that does not know a session variable
// gets it under its own name (MySQL's max_execution_time is in ms), and
// an unknown variable without a fallback, or another error, stops.
func TestSessionFallbacks(t *testing.T) {
	unknown := func(name string) error {
		return fmt.Errorf("open: %w", &mysqldrv.MySQLError{Number: 1193, Message: "Unknown system variable '" + name + "'"})
	}
	cases := []struct {
		err    error
		params map[string]string
		want   map[string]string
		again  bool
	}{
		{unknown("max_statement_time"), map[string]string{"max_statement_time": "1.5", "a": "1"},
			map[string]string{"max_execution_time": "1500", "a": "1"}, true},
		{unknown("transaction_isolation"), map[string]string{"transaction_isolation": "'READ-COMMITTED'"},
			map[string]string{"tx_isolation": "'READ-COMMITTED'"}, true},
		{unknown("max_execution_time"), map[string]string{"max_execution_time": "1500", "a": "1"},
			map[string]string{"a": "1"}, true},
		{unknown("tx_isolation"), map[string]string{"tx_isolation": "'READ-COMMITTED'"},
			map[string]string{"tx_isolation": "'READ-COMMITTED'"}, false},
		{unknown("max_statement_time"), map[string]string{}, map[string]string{}, false},
		{&mysqldrv.MySQLError{Number: 1045, Message: "Access denied for user 'max_statement_time'"},
			map[string]string{"max_statement_time": "30"}, map[string]string{"max_statement_time": "30"}, false},
	}
	for _, c := range cases {
		name, ok := unknownVariable(c.err)
		again := ok && fallBack(c.params, name)
		if again != c.again || !maps.Equal(c.params, c.want) {
			t.Errorf("%v: again=%v params=%v, want %v %v", c.err, again, c.params, c.again, c.want)
		}
	}
}

// TestServerDSNIsNoSQLiteFile: a MySQL DSN without its mysql:// prefix is
// refused, not opened as a SQLite file (a ledger per instance, in a
// directory named after the password); the error does not echo it.
func TestServerDSNIsNoSQLiteFile(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, dsn := range []string{"gw:s3cret@tcp(db:3306)/gateway", "gw:s3cret@unix(/run/mysqld.sock)/gateway",
		"mariadb://gw:s3cret@db/gateway", "gw:s3cret@/gateway", "gw:s3cret@(db:3306)/gateway",
		"gw:s3cret@tcp6([::1]:3306)/gateway", "gw:s3cret@tcp4(db)/gateway", "gw:s3/cret@tcp(db)/gateway?loc=Asia/Shanghai",
		"gw:s3cret@db:3306/gateway", "tcp(db:3306)/gateway",
		// No /db, and a '/' in the password: the last '/' is before the '@'.
		"gw:s3/cret@tcp(db:3306)", "gw:s3/cret@tcp(db:3306)?parseTime=true"} {
		_, _, err := Open(Config{DSN: dsn})
		if err == nil || !strings.Contains(err.Error(), "mysql://") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: err = %v, want a refusal naming mysql:// without the password", dsn, err)
		}
	}
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Fatalf("files left behind: %v", entries)
	}
	for _, dsn := range []string{filepath.Join("data", "ledger.db"), "file:mem1?mode=memory&cache=shared"} {
		db, _, err := Open(Config{DSN: dsn})
		if err != nil {
			t.Fatalf("%s: %v", dsn, err)
		}
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	}
}
