// Package ledgerdb opens the ledger's database: MySQL/MariaDB in
// production, an embedded SQLite file for `make run` and tests. It is
// its own package so that code which only uses the ledger's types (the
// HTTP edge, its fuzz targets) does not link the SQLite engine.
package ledgerdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"paygateway/migrations"
)

// Config says where the ledger lives and how hard the pool may be used.
type Config struct {
	// DSN is "mysql://user:pass@tcp(host:3306)/db?…" for MySQL/MariaDB;
	// anything else is a SQLite file path (or a "file:" URI).
	DSN             string
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration
	// ConnMaxIdleTime closes a connection idle this long (default 5 min):
	// a firewall or load balancer that drops idle flows silently would
	// otherwise leave dead connections in the pool, and each would cost
	// the request that takes it its whole deadline.
	ConnMaxIdleTime time.Duration
	// DialTimeout bounds connecting (with ReadTimeout, at most 30 s of it,
	// Open's whole first connection: see connectTimeout); ReadTimeout/WriteTimeout bound each
	// packet on MySQL so a hung server cannot hold a request forever.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// LockWaitTimeout, when set, is MySQL's innodb_lock_wait_timeout for
	// the pool's connections (whole seconds, at least 1). A context that
	// ends only closes the client's socket: the statement goes on waiting
	// for its row lock on the server, holding the locks it has, for the
	// server's default of 50 s, and redeliveries queue behind it.
	LockWaitTimeout time.Duration
	// StatementTimeout, when set, ends a statement on the server after
	// this long (MariaDB's max_statement_time; on MySQL, which only
	// bounds SELECTs, max_execution_time). A context that ends, or a read
	// that times out, only closes the client's socket: without it an
	// abandoned scan goes on taking the server's time from every other
	// query. Left unset on the migration connection: an ALTER cut off
	// halfway leaves work to redo.
	StatementTimeout time.Duration
	// TLSCAFile, when set, turns TLS on to MySQL and verifies the server's
	// certificate against this CA (PEM) and the DSN's host (see checkTLS).
	TLSCAFile string
}

// Open is OpenContext without a caller's context: connectTimeout alone
// bounds connecting.
func Open(cfg Config) (*gorm.DB, migrations.Dialect, error) {
	return OpenContext(context.Background(), cfg)
}

// OpenContext opens the database named by cfg.DSN and checks that it
// answers, giving up when ctx ends or, on MySQL, when one connection
// takes longer than connectTimeout. It does not migrate.
func OpenContext(ctx context.Context, cfg Config) (*gorm.DB, migrations.Dialect, error) {
	// No automatic ping: gorm's runs on context.Background, where a stop
	// signal cannot end it; ping below runs on ctx.
	gcfg := &gorm.Config{
		TranslateError:         true,
		SkipDefaultTransaction: true,
		DisableAutomaticPing:   true,
		NowFunc:                microNow,
		Logger:                 logger.Discard,
	}
	if dsn, ok := strings.CutPrefix(cfg.DSN, "mysql://"); ok {
		db, err := openMySQL(ctx, dsn, cfg, gcfg)
		return db, migrations.MySQL, err
	}
	if cfg.TLSCAFile != "" {
		return nil, migrations.SQLite, errors.New("database.tls_ca_file is set, but the DSN names a SQLite file, not a MySQL server")
	}
	db, err := openSQLite(ctx, cfg.DSN, gcfg)
	return db, migrations.SQLite, err
}

// microNow is gorm's clock: UTC to the microsecond, all DATETIME(6)
// keeps. MySQL 8 rounds a finer time, which can carry it into the next
// second or business day.
func microNow() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// connectTimeout bounds one connection's dial, greeting, login and session
// variables on MySQL: the dial timeout, then the read timeout (at most
// 30 s) for the rest, as the driver itself would allow a healthy but slow
// server. The caller's deadline may be a migration's, hours: a server that
// accepts TCP but never greets is not going to answer later.
func connectTimeout(cfg Config) time.Duration {
	return orDefault(cfg.DialTimeout, 5*time.Second) + min(orDefault(cfg.ReadTimeout, 30*time.Second), 30*time.Second)
}

// pingWithin is ping with its own bound, one per connection tried.
func pingWithin(ctx context.Context, db *gorm.DB, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return ping(ctx, db)
}

// ping checks that db answers within ctx, and closes it when it does not.
func ping(ctx context.Context, db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) { // the driver may report only the closed socket
			return fmt.Errorf("%w (%w)", cerr, err)
		}
		return err
	}
	return nil
}

func openMySQL(ctx context.Context, dsn string, cfg Config, gcfg *gorm.Config) (*gorm.DB, error) {
	mc, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse mysql dsn: %w", dsnError(err))
	}
	if err := checkTLS(mc, cfg.TLSCAFile); err != nil {
		return nil, err
	}
	mc.ParseTime = true
	mc.Loc = time.UTC
	mc.Timeout = orDefault(cfg.DialTimeout, 5*time.Second)
	mc.ReadTimeout = orDefault(cfg.ReadTimeout, 30*time.Second)
	mc.WriteTimeout = orDefault(cfg.WriteTimeout, 30*time.Second)
	// Client-side interpolation: one round trip per statement instead of
	// prepare, execute and close. The driver escapes every value and
	// refuses interpolation under the multibyte charsets where escaping
	// is unsafe (big5, gbk, sjis…); the ledger's connections are utf8mb4.
	mc.InterpolateParams = true
	// Rows affected means rows changed: the ledger reads a 0 from an
	// UPDATE or INSERT IGNORE as "already done" (a duplicate job, a claim
	// lost to another instance). A DSN's clientFoundRows=true would count
	// matched rows and make a skipped duplicate look inserted.
	mc.ClientFoundRows = false
	// The ledger loads no file: a DSN's allowAllFiles=true would let the
	// server (or anyone between, without TLS) read any file this process
	// can, the merchant's private key included, by LOAD DATA LOCAL INFILE.
	mc.AllowAllFiles = false
	// Belt and braces for a time the ledger did not cut to the microsecond
	// itself: the driver cuts it rather than let MySQL 8 round it.
	if err := mc.Apply(mysqldrv.TimeTruncate(time.Microsecond)); err != nil {
		return nil, fmt.Errorf("configure mysql dsn: %w", err)
	}
	if mc.Params, err = lowerParams(mc.Params); err != nil {
		return nil, err
	}
	// READ COMMITTED: a locked read sees the newest committed row, and
	// gap locks do not turn concurrent inserts into deadlocks.
	mc.Params["transaction_isolation"] = "'READ-COMMITTED'"
	// Strict: a value too long for its column is refused, not cut, so two
	// distinct keys can never be stored as one, whatever the server's
	// default sql_mode or the DSN's.
	mc.Params["sql_mode"] = strictMode(mc.Params["sql_mode"])
	if _, set := mc.Params["innodb_lock_wait_timeout"]; !set && cfg.LockWaitTimeout > 0 {
		mc.Params["innodb_lock_wait_timeout"] = strconv.Itoa(max(1, int(cfg.LockWaitTimeout.Round(time.Second)/time.Second)))
	}
	_, mariadb := mc.Params["max_statement_time"]
	if _, mysql := mc.Params["max_execution_time"]; !mariadb && !mysql && cfg.StatementTimeout > 0 {
		mc.Params["max_statement_time"] = strconv.FormatFloat(cfg.StatementTimeout.Seconds(), 'f', -1, 64)
	}
	db, err := openWithFallbacks(ctx, mc, gcfg, connectTimeout(cfg))
	if err != nil {
		return nil, fmt.Errorf("open mysql %s@%s/%s: %w", mc.User, mc.Addr, mc.DBName, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxOpenConns(orDefaultInt(cfg.MaxOpenConns, 50))
	sqlDB.SetMaxIdleConns(orDefaultInt(cfg.MaxIdleConns, 25))
	sqlDB.SetConnMaxLifetime(orDefault(cfg.ConnMaxLifetime, 30*time.Minute))
	sqlDB.SetConnMaxIdleTime(orDefault(cfg.ConnMaxIdleTime, 5*time.Minute))
	return db, nil
}

// dsnError is the driver's error for a DSN it cannot parse, when that
// error quotes nothing of the DSN (its "invalid DSN: …" ones). Its others
// quote a part of the DSN, which may be the password: the driver splits a
// DSN without its /db at a '/' in the password ("default addr for network
// 'user:pa' unknown"), and the start's error reaches the log.
func dsnError(err error) error {
	if strings.HasPrefix(err.Error(), "invalid DSN: ") {
		return err
	}
	return errors.New("not of the form user:pass@tcp(host:3306)/db?param=value (is the /db missing, " +
		"or a param's value bad?); the driver's message is not shown: it may quote the password")
}

// lowerParams names the DSN's session variables in lower case. MySQL's
// variable names ignore case, but the driver sends every param in one
// SET in map order: a DSN's SQL_MODE=” beside the sql_mode set here would
// win on some connections and leave them without strict mode. A variable
// given twice (in two spellings) is refused.
func lowerParams(params map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(params))
	for k, v := range params {
		lk := strings.ToLower(k)
		if _, twice := out[lk]; twice {
			return nil, fmt.Errorf("mysql dsn: session variable %s given twice", lk)
		}
		out[lk] = v
	}
	return out, nil
}

// strictMode is the session's sql_mode: the DSN's own (dsnMode, a SQL
// value as the DSN writes it), or the server's default when it has none,
// with STRICT_TRANS_TABLES added. The DSN's other modes stay.
func strictMode(dsnMode string) string {
	mode := "@@sql_mode"
	switch {
	case strings.EqualFold(dsnMode, "DEFAULT"):
		mode = "@@GLOBAL.sql_mode"
	case bareWord(dsnMode):
		// SET takes a lone mode unquoted (sql_mode=ANSI); an expression does not.
		mode = "'" + dsnMode + "'"
	case dsnMode != "":
		mode = dsnMode
	}
	return "CONCAT_WS(',', NULLIF(" + mode + ", ''), 'STRICT_TRANS_TABLES')"
}

// bareWord: s is a lone unquoted name, such as ANSI or NO_ZERO_DATE.
func bareWord(s string) bool {
	for i, r := range s {
		if !(r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}

// sessionFallbacks name, for a session variable a server does not know
// (error 1193), what that server calls it, and its value there.
var sessionFallbacks = map[string]func(v string) (string, string){
	// MariaDB before 11.1.
	"transaction_isolation": func(v string) (string, string) { return "tx_isolation", v },
	// MySQL: milliseconds, and only SELECTs, the back office's scans.
	"max_statement_time": func(v string) (string, string) {
		secs, _ := strconv.ParseFloat(v, 64)
		return "max_execution_time", strconv.FormatInt(max(1, int64(secs*1000)), 10)
	},
	// MySQL before 5.7.8 has neither: it runs without (logged).
	"max_execution_time": func(string) (string, string) { return "", "" },
}

// openWithFallbacks opens the pool, and again under the server's own
// name for each session variable it does not know (the server refuses
// one when the ping's connection sets it).
func openWithFallbacks(ctx context.Context, mc *mysqldrv.Config, gcfg *gorm.Config, timeout time.Duration) (*gorm.DB, error) {
	for {
		// No RETURNING: on MariaDB it makes an upsert that hit a duplicate
		// report one affected row, hiding the duplicate from ON CONFLICT code.
		// No SELECT VERSION(): gorm runs it on context.Background, and uses
		// the answer only for RETURNING, FOR SHARE and its schema migrator,
		// none of which the ledger uses (its locks are FOR UPDATE, its
		// migrations plain SQL files).
		db, err := gorm.Open(mysql.New(mysql.Config{DSNConfig: mc, DisableWithReturning: true,
			SkipInitializeWithVersion: true}), gcfg)
		if err != nil {
			return nil, err
		}
		err = pingWithin(ctx, db, timeout)
		name, ok := unknownVariable(err)
		if !ok || !fallBack(mc.Params, name) {
			return db, err
		}
	}
}

// fallBack replaces params[name] by its fallback; false when there is none.
func fallBack(params map[string]string, name string) bool {
	fb, ok := sessionFallbacks[name]
	v, set := params[name]
	if !ok || !set {
		return false
	}
	delete(params, name)
	alt, altValue := fb(v)
	if alt == "" {
		slog.Warn("the database server has no statement timeout; a statement a client gave up on runs on", "variable", name)
		return true
	}
	params[alt] = altValue
	return true
}

// unknownVariable names the variable of MySQL error 1193, "Unknown system
// variable 'x'".
func unknownVariable(err error) (string, bool) {
	var me *mysqldrv.MySQLError
	if !errors.As(err, &me) || me.Number != 1193 {
		return "", false
	}
	_, rest, ok := strings.Cut(me.Message, "'")
	name, _, closed := strings.Cut(rest, "'")
	return name, ok && closed
}

// openSQLite uses one connection: SQLite has a single writer, and one
// connection turns "database is locked" errors into an orderly queue.
func openSQLite(ctx context.Context, path string, gcfg *gorm.Config) (*gorm.DB, error) {
	if serverDSN(path) {
		// Not echoed: it may hold a password.
		return nil, errors.New("the database DSN names a server, not a SQLite file: a MySQL/MariaDB DSN starts with mysql://")
	}
	dsn := path
	if !strings.HasPrefix(path, "file:") {
		if dir := filepath.Dir(path); dir != "." {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("create sqlite dir %s: %w", dir, err)
			}
		}
		dsn = "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)"
	}
	db, err := gorm.Open(sqlite.Open(dsn), gcfg)
	if err == nil {
		err = ping(ctx, db)
	}
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxOpenConns(1)
	sqlDB.SetConnMaxLifetime(0)
	return db, nil
}

// serverDSN: a DSN written for a database server that lacks the mysql://
// prefix: scheme://…, or any of the MySQL driver's forms,
// [user[:pass]@][net[(addr)]]/db, with or without the protocol (user:pass@(host)/db,
// @tcp6(…), net(addr)/db). Taken for a file path, it would give each
// instance a ledger of its own on its disk, under a directory named after
// the password. Any "@" before the last "/" counts: a SQLite path has no
// user, and a directory named user:pass@host must never be made.
func serverDSN(dsn string) bool {
	if strings.HasPrefix(dsn, "file:") {
		return false
	}
	head := dsn
	if i := strings.LastIndex(dsn, "/"); i >= 0 {
		head = dsn[:i]
	}
	return strings.Contains(dsn, "://") || strings.Contains(head, "@") || netAddrDSN.MatchString(dsn) ||
		userAddrDSN.MatchString(dsn)
}

// netAddrDSN is the driver's net(addr)/db form without a user.
var netAddrDSN = regexp.MustCompile(`^[a-z0-9]+\([^)]*\)/`)

// userAddrDSN is user:pass@net(addr) ending the DSN (or its params):
// without its /db, a '/' in the password is the last one.
var userAddrDSN = regexp.MustCompile(`@[a-z0-9]*\([^)]*\)(\?|$)`)

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orDefaultInt(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}
