package ledgerdb_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// TestLedgerVerifiesTheDatabaseCertificate: against a MariaDB of its own
// that speaks TLS, the ledger connects over TLS with database.tls_ca_file
// naming the server's CA, and refuses a server whose certificate another
// CA signed, or its CA signed for another host than the DSN's. A DSN's
// tls=skip-verify or tls=preferred (any certificate taken: anyone on the
// path could pose as the database) is refused before dialling, as is
// tls=false beside a CA file.
func TestLedgerVerifiesTheDatabaseCertificate(t *testing.T) {
	srv := ledgertest.StartTLSMariaDB(t)
	dsn := "mysql://root@tcp(" + srv.Addr + ")/mysql"
	t.Run("its CA", func(t *testing.T) {
		db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: dsn, TLSCAFile: srv.CAFile})
		if err != nil {
			t.Fatalf("open with the server's CA: %v", err)
		}
		sqlDB, _ := db.DB()
		defer sqlDB.Close()
		var name, version string
		if err := sqlDB.QueryRow("SHOW SESSION STATUS LIKE 'Ssl_version'").Scan(&name, &version); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(version, "TLS") {
			t.Fatalf("Ssl_version %q: the connection is not TLS", version)
		}
	})
	other, _, _ := ledgertest.WritePKI(t, t.TempDir())
	refused := map[string]struct {
		cfg  ledgerdb.Config
		want string
	}{
		// The server takes TLS alone (MariaDB answers a plain login so).
		"no TLS":       {ledgerdb.Config{DSN: dsn}, "Access denied"},
		"another CA":   {ledgerdb.Config{DSN: dsn, TLSCAFile: other}, "certificate"},
		"system roots": {ledgerdb.Config{DSN: dsn + "?tls=true"}, "certificate"},
		// Its CA signed it, but for 127.0.0.1 alone: the DSN's host is
		// what the certificate must name.
		"another host name":       {ledgerdb.Config{DSN: strings.Replace(dsn, "127.0.0.1", "localhost", 1), TLSCAFile: srv.CAFile}, "certificate"},
		"skip-verify":             {ledgerdb.Config{DSN: dsn + "?tls=skip-verify"}, "tls=skip-verify verifies no certificate"},
		"preferred":               {ledgerdb.Config{DSN: dsn + "?tls=preferred"}, "tls=preferred verifies no certificate"},
		"skip-verify with a CA":   {ledgerdb.Config{DSN: dsn + "?tls=skip-verify", TLSCAFile: srv.CAFile}, "verifies no certificate"},
		"tls=false with a CA":     {ledgerdb.Config{DSN: dsn + "?tls=false", TLSCAFile: srv.CAFile}, "tls=false"},
		"a CA file without PEM":   {ledgerdb.Config{DSN: dsn, TLSCAFile: notPEM(t)}, "no PEM certificate"},
		"a CA file not there":     {ledgerdb.Config{DSN: dsn, TLSCAFile: filepath.Join(t.TempDir(), "none.pem")}, "database.tls_ca_file"},
		"a CA file beside SQLite": {ledgerdb.Config{DSN: filepath.Join(t.TempDir(), "l.db"), TLSCAFile: srv.CAFile}, "SQLite"},
	}
	for name, c := range refused {
		t.Run(name, func(t *testing.T) {
			db, _, err := ledgerdb.Open(c.cfg)
			if err == nil {
				sqlDB, _ := db.DB()
				sqlDB.Close()
				t.Fatal("opened; want it refused")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func notPEM(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
