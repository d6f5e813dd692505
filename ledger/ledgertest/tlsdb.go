package ledgertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// WritePKI writes to dir a throwaway CA and a server certificate for
// 127.0.0.1 that it signs, with the certificate's key.
func WritePKI(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey := ecKey(t)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key := ecKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test server"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, kind string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der),
		write("server.key", "EC PRIVATE KEY", keyDER)
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TLSMariaDB is a MariaDB server of the test's own that speaks TLS with a
// certificate for 127.0.0.1 signed by CAFile, and nothing else
// (require_secure_transport): what works with it went over TLS. Its root
// has no password, as on the shared test server.
type TLSMariaDB struct {
	Addr, CAFile string
}

// StartTLSMariaDB starts a TLSMariaDB (a fresh data directory, about a
// second) and stops it when the test ends. Without mariadbd it skips, or
// fails when CI=true.
func StartTLSMariaDB(t testing.TB) TLSMariaDB {
	t.Helper()
	server, install := lookTool(t, "mariadbd", "/usr/sbin/mariadbd"), lookTool(t, "mariadb-install-db", "")
	dir, err := os.MkdirTemp("", "tlsdb") // short: it holds the server's unix socket
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(install, "--no-defaults", "--datadir="+data, "--skip-test-db",
		"--auth-root-authentication-method=normal", smallLog).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	caFile, certFile, keyFile := WritePKI(t, dir)
	port := freePort(t)
	cmd := exec.Command(server, "--no-defaults", "--datadir="+data, "--socket="+filepath.Join(dir, "sock"),
		"--port="+strconv.Itoa(port), "--bind-address=127.0.0.1", "--skip-log-bin",
		"--innodb-buffer-pool-size=16M", smallLog, "--require-secure-transport=ON", "--log-error="+filepath.Join(dir, "error.log"),
		"--pid-file="+filepath.Join(dir, "pid"), "--ssl-ca="+caFile, "--ssl-cert="+certFile, "--ssl-key="+keyFile)
	if os.Geteuid() == 0 {
		cmd.Args = append(cmd.Args, "--user=root")
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	db := TLSMariaDB{Addr: "127.0.0.1:" + strconv.Itoa(port), CAFile: caFile}
	db.awaitReady(t, filepath.Join(dir, "error.log"))
	return db
}

// Exec runs statements as root over TLS, trusting CAFile.
func (d TLSMariaDB) Exec(t testing.TB, statements ...string) {
	t.Helper()
	conn := d.open(t)
	defer conn.Close()
	for _, q := range statements {
		if _, err := conn.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func (d TLSMariaDB) open(t testing.TB) *sql.DB {
	t.Helper()
	name := "ledgertest-" + d.Addr
	pem, err := os.ReadFile(d.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	if err := mysqldrv.RegisterTLSConfig(name, &tls.Config{RootCAs: pool}); err != nil {
		t.Fatal(err)
	}
	conn, err := sql.Open("mysql", "root@tcp("+d.Addr+")/?timeout=1s&tls="+name)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// smallLog keeps a private server's data directory at about 20 MB (the
// default redo log alone is 96 MB).
const smallLog = "--innodb-log-file-size=4M"

// awaitReady waits until the server takes a connection.
func (d TLSMariaDB) awaitReady(t testing.TB, errorLog string) {
	t.Helper()
	conn := d.open(t)
	defer conn.Close()
	deadline := time.Now().Add(30 * time.Second)
	for conn.Ping() != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(errorLog)
			t.Fatalf("private mariadbd did not start: %s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lookTool finds a MariaDB program on PATH, or at fallback.
func lookTool(t testing.TB, name, fallback string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); fallback != "" && err == nil {
		return fallback
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found", name)
	}
	t.Skipf("%s not found", name)
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
