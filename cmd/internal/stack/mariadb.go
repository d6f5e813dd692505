package stack

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver for the readiness ping
)

// MariaDB is a private MariaDB server on its own datadir and port.
type MariaDB struct {
	Dir  string
	Port int
	proc *Proc
}

// StartMariaDB initialises a datadir under dir and starts the server on a
// free port, with root and no password, reachable over TCP on 127.0.0.1.
func StartMariaDB(ctx context.Context, dir string) (*MariaDB, error) {
	install, err := LookPath("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	out, err := exec.CommandContext(ctx, install, "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %w: %s", err, tail(out))
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &MariaDB{Dir: dir, Port: port}
	return m, m.Start(ctx)
}

// Start runs the server on the existing datadir and waits until it answers.
func (m *MariaDB) Start(ctx context.Context) error {
	bin, err := LookPath("mariadbd")
	if err != nil {
		return err
	}
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(m.Dir, "data"), "--port=" + strconv.Itoa(m.Port),
		"--bind-address=127.0.0.1", "--socket=" + filepath.Join(m.Dir, "mysqld.sock"), "--user=root",
		"--pid-file=" + filepath.Join(m.Dir, "mysqld.pid"), "--skip-log-bin", "--innodb-buffer-pool-size=128M",
		"--max-connections=500", "--skip-name-resolve"}
	m.proc, err = StartProc("mariadbd", bin, args, nil, filepath.Join(m.Dir, "mariadbd.log"))
	if err != nil {
		return err
	}
	db, err := sql.Open("mysql", m.DSN(""))
	if err != nil {
		return err
	}
	defer db.Close()
	return waitFor(ctx, m.proc, 60*time.Second, func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return db.PingContext(pctx)
	})
}

// Stop shuts the server down cleanly (SIGTERM).
func (m *MariaDB) Stop() {
	if m.proc != nil {
		m.proc.Stop(60 * time.Second)
	}
}

// Restart stops the server and starts it again on the same datadir and port.
func (m *MariaDB) Restart(ctx context.Context) error {
	m.Stop()
	return m.Start(ctx)
}

// Crash kills the server with SIGKILL, as a power cut or the OOM killer
// would, and starts it again: InnoDB recovers from its redo log, so every
// commit the server acknowledged must still be there.
func (m *MariaDB) Crash(ctx context.Context) error {
	if m.proc != nil {
		m.proc.Kill()
	}
	return m.Start(ctx)
}

// DSN is the go-sql-driver DSN of database db (may be empty).
func (m *MariaDB) DSN(db string) string {
	return fmt.Sprintf("root@tcp(127.0.0.1:%d)/%s", m.Port, db)
}

// CreateDatabase creates database name on the server at dsn (a DSN of the
// server, no database) and returns a function that drops it.
func CreateDatabase(ctx context.Context, serverDSN, name string) (func(), error) {
	db, err := sql.Open("mysql", serverDSN)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		db.Close()
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	return func() {
		_, _ = db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS `"+name+"`")
		db.Close()
	}, nil
}

func tail(b []byte) string {
	if len(b) > 500 {
		b = b[len(b)-500:]
	}
	return string(b)
}

// RemoveAll deletes dir, ignoring errors: a leftover temp dir is harmless.
func RemoveAll(dir string) { _ = os.RemoveAll(dir) }
