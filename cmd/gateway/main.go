// Command gateway is the WeChat Pay payment and refund callback gateway.
//
//	gateway [serve] [--config FILE]   run the gateway
//	gateway migrate [--config FILE]   apply database migrations and exit
//	gateway dev                       run with SQLite and in-process simulators
//	gateway outbox replay ID          put a dead-lettered outbox job back in the queue
//	gateway devtoken --openid X       print a user JWT signed with the dev secret
//	gateway apikey create --name N --role R | revoke --name N | list
//	gateway reconcile --date YYYY-MM-DD   reconcile one day's trade bill
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
)

// logOutput is where the logs go: stderr, through a buffer, so that a
// stalled stderr pipe cannot block request handlers (see
// gateway.LogWriter).
var logOutput = gateway.NewLogWriter(os.Stderr, logQueue)

// logQueue is how many log lines may wait for stderr (about 2.5 MB of
// typical access-log lines).
const logQueue = 8192

func main() {
	err := run(os.Args[1:])
	if err != nil {
		// Through the log's queue: written straight to a stalled stderr,
		// it would keep the process from exiting.
		logOutput.WriteWait(exitLine(err), time.Second)
	}
	logOutput.Flush(2 * time.Second)
	if err != nil {
		os.Exit(1)
	}
}

// exitLine is the JSON log line naming why the process exits: one line,
// as every other, even when the error spans several (YAML's).
func exitLine(err error) []byte {
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Error("gateway exited", "err", err.Error())
	return b.Bytes()
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "serve":
		return serve(ctx, args)
	case "migrate":
		return migrate(ctx, args)
	case "dev":
		return dev(ctx, args)
	case "outbox":
		return outboxCommand(ctx, args)
	case "devtoken":
		return devToken(args)
	case "apikey":
		return apikeyCmd(ctx, args, os.Stdout)
	case "reconcile":
		return reconcileCmd(ctx, args, os.Stdout)
	}
	return fmt.Errorf("unknown command %q (want serve, migrate, dev, devtoken, outbox, apikey or reconcile)", cmd)
}

// loadFromFlags parses --config and loads the config; serve and the admin
// commands (named) must name their database (see databaseNamed).
func loadFromFlags(name string, args []string, named bool) (Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", os.Getenv("GATEWAY_CONFIG"), "YAML config file (env GATEWAY_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return Config{}, fs, err
	}
	// `gateway serve prod.yaml` (the file without --config) would start on
	// the environment and the defaults, the file ignored.
	if fs.NArg() > 0 {
		return Config{}, fs, fmt.Errorf("%s: unexpected arguments %s (a config file is passed as --config FILE)",
			name, strings.Join(fs.Args(), " "))
	}
	cfg, err := Load(*path)
	if err != nil {
		return cfg, fs, err
	}
	if named {
		if err := databaseNamed(name, *path, cfg); err != nil {
			return cfg, fs, err
		}
	}
	setupLogging(cfg.Log)
	warnUnknownEnv()
	applyRuntime(cfg.Runtime)
	return cfg, fs, nil
}

// databaseNamed refuses a loaded config whose database neither its file
// nor GATEWAY_DATABASE_DSN named. The default database is the local
// SQLite file of `make run`: a gateway would answer WeChat Pay from a file
// on its container's disk, and an operator who forgot --config (or whose
// file left the DSN to a secret that was not mounted) would create a key,
// replay a job or revoke a key there, be told it worked, and leave the
// gateway's database as it was.
func databaseNamed(cmd, path string, cfg Config) error {
	dsn := cfg.Database.DSN
	switch {
	case dsn != "" && (dsn != DefaultConfig().Database.DSN || strings.TrimSpace(os.Getenv("GATEWAY_DATABASE_DSN")) != ""):
		return nil
	case path == "":
		return fmt.Errorf("%s: no database named: pass --config FILE or set GATEWAY_CONFIG or GATEWAY_DATABASE_DSN "+
			"(for the database of `make run`: GATEWAY_DATABASE_DSN=%s)", cmd, DefaultConfig().Database.DSN)
	}
	return fmt.Errorf("%s: %s names no database.dsn (and GATEWAY_DATABASE_DSN is not set): "+
		"it would use make run's local file or none", cmd, path)
}

// applyRuntime sets the collector's pace and soft memory limit, unless the
// GOGC or GOMEMLIMIT environment variables already did.
func applyRuntime(r RuntimeConfig) {
	if r.GCPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(r.GCPercent)
	}
	if r.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(r.MemoryLimit)
	}
}

func serve(ctx context.Context, args []string) error {
	// Like the admin commands, serve names its database: a deployment that
	// forgot GATEWAY_DATABASE_DSN would otherwise answer WeChat Pay 204 from
	// a file on the container's disk, one ledger per instance.
	cfg, _, err := loadFromFlags("serve", args, true)
	if err != nil {
		return err
	}
	m, err := NewMain(ctx, cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Run(ctx)
}

func migrate(ctx context.Context, args []string) error {
	cfg, _, err := loadFromFlags("migrate", args, true)
	if err != nil {
		return err
	}
	m := &Main{Config: cfg, MigrateTimeout: 24 * time.Hour} // Ctrl-C stops it
	defer m.Close()
	if err := m.openStore(ctx); err != nil {
		return err
	}
	slog.Info("migrations applied", "dialect", m.Store.Dialect())
	return nil
}

func setupLogging(c LogConfig) { setupLoggingTo(logOutput, c) }

// setupLoggingTo sends everything the process logs to out as JSON: slog's
// lines, the standard log package's (net/http's server errors among
// them), and the MySQL driver's and go-redis's own messages, which would
// otherwise be written to stderr directly, blocking their caller when
// stderr stalls.
func setupLoggingTo(out io.Writer, c LogConfig) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	// SetDefault also points the standard log package at this handler;
	// what is written there (a failed TLS handshake, an accept error) is
	// something gone wrong, so a warning rather than slog's default info.
	slog.SetDefault(slog.New(gateway.NewLogHandler(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level}))))
	slog.SetLogLoggerLevel(slog.LevelWarn)
	_ = mysql.SetLogger(driverLogger{}) // never fails on a non-nil logger
	redis.SetLogger(redisLogger{})
}

// driverLogger sends the MySQL driver's own messages (a connection reset,
// a bad packet) to the JSON log: left to itself the driver writes them to
// stderr directly, blocking its caller when stderr stalls.
type driverLogger struct{}

func (driverLogger) Print(v ...any) { slog.Warn("mysql driver", "detail", fmt.Sprint(v...)) }

// redisLogger sends go-redis's own messages to the JSON log: left to
// itself go-redis writes them to stderr directly, a failed dial from the
// pool's background goroutine while it holds a pool slot.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
