package main

import (
	"database/sql"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"paygateway/ledger/ledgertest"
)

// TestDriverMessagesGoToTheJSONLog: once serve has set its logging up, the
// MySQL driver's own message about a connection the server closed is a
// JSON log line, not a raw write to stderr that would block its caller
// while stderr stalls.
func TestDriverMessagesGoToTheJSONLog(t *testing.T) {
	buf := captureLogs(t)
	if err := mysql.SetLogger(driverLogger{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the driver's own default
		_ = mysql.SetLogger(log.New(os.Stderr, "[mysql] ", log.Ldate|log.Ltime|log.Lshortfile))
	})
	dsn := strings.TrimPrefix(ledgertest.MySQLDSN(t), "mysql://")
	db := openRaw(t, dsn)
	db.SetMaxOpenConns(1)
	var id int64
	if err := db.QueryRow("SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := openRaw(t, dsn).Exec(fmt.Sprintf("KILL %d", id)); err != nil {
		t.Fatal(err)
	}
	// The driver finds its idle connection closed when it next takes it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := db.Exec("SELECT 1"); err != nil {
			t.Logf("query after the kill: %v", err)
		}
		if strings.Contains(buf.String(), `"msg":"mysql driver"`) {
			break
		}
	}
	if !strings.Contains(buf.String(), `"msg":"mysql driver"`) {
		t.Fatalf("no driver message in the JSON log after its connection was killed; log: %q", buf.String())
	}
	// Which message comes first depends on when the server's close lands
	// ("closing bad idle connection: EOF", or a read that met it).
	for _, l := range logLines(t, buf.String(), "mysql driver") {
		if d, _ := l["detail"].(string); d == "" || l["level"] != "WARN" {
			t.Fatalf("driver line %v, want a WARN with the driver's message as detail", l)
		}
	}
}

// openRaw opens database/sql on a MySQL DSN until the test ends.
func openRaw(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
