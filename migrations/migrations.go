// Package migrations holds the gateway's versioned SQL schema, one twin file
// per dialect, and applies it forward only.
//
// Each MySQL file holds one DDL statement, because MySQL commits DDL
// implicitly: a file with two statements could stop half applied.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
)

//go:embed mysql/*.sql sqlite/*.sql
var files embed.FS

// Dialect names a SQL dialect with its own migration folder.
type Dialect string

// The dialects the gateway supports.
const (
	MySQL  Dialect = "mysql"
	SQLite Dialect = "sqlite"
)

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// List returns the migrations of a dialect in version order.
func List(d Dialect) ([]Migration, error) {
	entries, err := fs.ReadDir(files, string(d))
	if err != nil {
		return nil, fmt.Errorf("list migrations for %s: %w", d, err)
	}
	var out []Migration
	for _, e := range entries {
		m, err := readMigration(d, e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].Name, out[i].Name, out[i].Version)
		}
	}
	return out, nil
}

func readMigration(d Dialect, name string) (Migration, error) {
	prefix, _, ok := strings.Cut(name, "_")
	version, err := strconv.Atoi(prefix)
	if !ok || err != nil {
		return Migration{}, fmt.Errorf("migration %s/%s: name must start with a number and '_'", d, name)
	}
	body, err := files.ReadFile(path.Join(string(d), name))
	if err != nil {
		return Migration{}, fmt.Errorf("read migration %s/%s: %w", d, name, err)
	}
	return Migration{Version: version, Name: strings.TrimSuffix(name, ".sql"), SQL: string(body)}, nil
}

// Statements splits a migration into the statements it holds.
func (m Migration) Statements() []string {
	var out []string
	for _, s := range strings.Split(m.SQL, ";\n") {
		if s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), ";")); s != "" {
			out = append(out, s)
		}
	}
	return out
}

const createVersionTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version BIGINT NOT NULL PRIMARY KEY,
  name VARCHAR(255) NOT NULL,
  applied_at VARCHAR(40) NOT NULL
)`

// Apply brings the database up to the newest migration. Several gateway
// instances may start at once: on MySQL a named lock serialises them.
func Apply(ctx context.Context, db *sql.DB, d Dialect) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: get connection: %w", err)
	}
	defer conn.Close()
	if d == MySQL {
		unlock, err := mysqlLock(ctx, conn)
		if err != nil {
			return err
		}
		defer unlock()
		if _, err := conn.ExecContext(ctx, setDDLLockWait); err != nil {
			return fmt.Errorf("migrate: set lock_wait_timeout: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, createVersionTable); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	all, err := List(d)
	if err != nil {
		return err
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return err
	}
	warnUnknown(ctx, all, done)
	first := true // only the first pending migration can be half applied
	for _, m := range all {
		if done[m.Version] {
			continue
		}
		if err := applyOne(ctx, conn, m, d, first); err != nil {
			return err
		}
		first = false
	}
	return nil
}

// setDDLLockWait bounds how long a DDL statement waits for its table's
// metadata lock. While an ALTER waits (behind a long transaction or a
// streaming export), every later query on that table queues behind it;
// MariaDB's default wait is a day. Failing after 5 s stops the start (the
// old instances keep serving) and the next start tries again.
const setDDLLockWait = "SET SESSION lock_wait_timeout = 5"

// warnUnknown warns when the database holds migrations this binary does
// not know: a newer binary ran, and this one may not write what it expects.
func warnUnknown(ctx context.Context, all []Migration, done map[int]bool) {
	known := map[int]bool{}
	for _, m := range all {
		known[m.Version] = true
	}
	for v := range done {
		if !known[v] {
			slog.WarnContext(ctx, "migrate: the database holds a migration this binary does not know; "+
				"a newer release ran against it", "version", v)
		}
	}
}

// migrateLock is the GET_LOCK name of the connection's database's
// migration (at most 64 characters: a database name is at most 64).
const migrateLock = "CONCAT('gw_migrate:', LEFT(DATABASE(), 53))"

func mysqlLock(ctx context.Context, conn *sql.Conn) (func(), error) {
	var got sql.NullInt64
	// Lock names are the server's, not the database's: the name carries
	// the database, or a migration of staging's would hold production's
	// start (two ledgers on one server).
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+migrateLock+", 60)").Scan(&got); err != nil {
		return nil, fmt.Errorf("migrate: take lock: %w", err)
	}
	if got.Int64 != 1 {
		return nil, fmt.Errorf("migrate: another migration of this database held its lock for 60s")
	}
	return func() {
		// Bounded even when ctx has ended (a hung server must not hold the
		// start, and a lost release ends with the connection anyway). The
		// connection may go back to the caller's pool: no 5 s lock wait there.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(rctx, "SET SESSION lock_wait_timeout = DEFAULT")
		_, _ = conn.ExecContext(rctx, "SELECT RELEASE_LOCK("+migrateLock+")")
	}, nil
}

func appliedVersions(ctx context.Context, conn *sql.Conn) (map[int]bool, error) {
	rows, err := conn.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: read applied versions: %w", err)
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("migrate: scan version: %w", err)
		}
		done[v] = true
	}
	return done, rows.Err()
}

// applyOne applies m and records its version. On SQLite both happen in one
// transaction. MySQL commits each DDL statement by itself, so a run cut
// short (a timeout, a kill) can leave a file's statement applied and its
// version not recorded: the next run finds the table, column or index
// already there (errors 1050, 1060, 1061) and takes the statement as
// applied, rather than refusing to start until someone repairs it by hand.
// Runs are serialised and stop at the first failure, so only the first
// pending migration (resumed) can be in that state; for any other such an
// error is a real conflict and stops the run.
func applyOne(ctx context.Context, conn *sql.Conn, m Migration, d Dialect, resumed bool) error {
	if d != MySQL {
		return applyInTx(ctx, conn, m)
	}
	for _, stmt := range m.Statements() {
		_, err := conn.ExecContext(ctx, stmt)
		if resumed && alreadyApplied(err) {
			slog.WarnContext(ctx, "migrate: statement already applied by an interrupted run", "migration", m.Name, "err", err)
			continue
		}
		if lockWaitTimedOut(err) {
			return fmt.Errorf("migrate: apply %s: a transaction or a long read holds the table; retry when it ends: %w", m.Name, err)
		}
		if err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.Name, err)
		}
	}
	return record(ctx, conn, m)
}

func applyInTx(ctx context.Context, conn *sql.Conn, m Migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: begin %s: %w", m.Name, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	for _, stmt := range m.Statements() {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.Name, err)
		}
	}
	if err := record(ctx, tx, m); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit %s: %w", m.Name, err)
	}
	return nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func record(ctx context.Context, db execer, m Migration) error {
	_, err := db.ExecContext(ctx,
		"INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		m.Version, m.Name, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("migrate: record %s: %w", m.Name, err)
	}
	return nil
}

// alreadyApplied reports MySQL's "table exists", "duplicate column",
// "duplicate key name" and, for a DROP, "can't drop; check that it exists".
func alreadyApplied(err error) bool {
	var me *mysqldrv.MySQLError
	return errors.As(err, &me) && (me.Number == 1050 || me.Number == 1060 || me.Number == 1061 || me.Number == 1091)
}

// versionTableExists reports whether schema_migrations is there.
func versionTableExists(ctx context.Context, conn *sql.Conn, d Dialect) (bool, error) {
	q := "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
	if d == MySQL {
		q = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'"
	}
	var n int
	if err := conn.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return false, fmt.Errorf("look for schema_migrations: %w", err)
	}
	return n > 0, nil
}

func lockWaitTimedOut(err error) bool {
	var me *mysqldrv.MySQLError
	return errors.As(err, &me) && me.Number == 1205
}

// Pending reports how many of this binary's migrations the database has
// not applied yet (versions it does not know do not make up for them).
func Pending(ctx context.Context, db *sql.DB, d Dialect) (int, error) {
	all, err := List(d)
	if err != nil {
		return 0, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("count applied migrations: %w", err)
	}
	defer conn.Close()
	exists, err := versionTableExists(ctx, conn, d)
	if err != nil || !exists { // a database never migrated lacks them all
		return len(all), err
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return 0, err
	}
	pending := 0
	for _, m := range all {
		if !done[m.Version] {
			pending++
		}
	}
	return pending, nil
}
