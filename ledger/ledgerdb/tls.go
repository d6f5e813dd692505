package ledgerdb

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// checkTLS settles how the ledger speaks TLS to MySQL. A DSN's
// tls=skip-verify or tls=preferred is refused: either takes any
// certificate (preferred even falls back to plain text), so anyone on the
// path could pose as the database, read the ledger and change what it
// answers. With caFile, TLS is on and the server's certificate must be
// signed by that CA and name the DSN's host; without it the DSN's tls=true
// verifies against the system's roots, and no tls (or tls=false) is plain.
func checkTLS(mc *mysqldrv.Config, caFile string) error {
	switch mc.TLSConfig {
	case "skip-verify", "preferred":
		return fmt.Errorf("mysql dsn: tls=%s verifies no certificate (anyone on the path could pose as the database); "+
			"use tls=true for the system's roots, or database.tls_ca_file for your database's CA", mc.TLSConfig)
	}
	if caFile == "" {
		return nil
	}
	if mc.TLSConfig == "false" {
		return fmt.Errorf("mysql dsn: tls=false, but database.tls_ca_file %s asks for TLS: drop one", caFile)
	}
	name, err := registerCA(caFile)
	if err != nil {
		return err
	}
	// The driver rebuilds its connector from the DSN text, which names a
	// TLS set-up only by its registered name; it fills in the server name
	// from the DSN's host.
	mc.TLSConfig, mc.TLS = name, nil
	return nil
}

// registerCA registers with the MySQL driver a TLS set-up that trusts the
// certificates in caFile alone, under a name taken from their content.
func registerCA(caFile string) (string, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return "", fmt.Errorf("database.tls_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return "", fmt.Errorf("database.tls_ca_file %s: no PEM certificate in it", caFile)
	}
	sum := sha256.Sum256(pem)
	name := "ledger-ca-" + hex.EncodeToString(sum[:8])
	if err := mysqldrv.RegisterTLSConfig(name, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}); err != nil {
		return "", fmt.Errorf("database.tls_ca_file: %w", err)
	}
	return name, nil
}
