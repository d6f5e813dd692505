package main

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"paygateway/cmd/internal/stack"
	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
	"paygateway/migrations"
)

// env is what every backend run shares: the gateway binary, keys and the
// WeChat Pay simulator (which refunds call).
type env struct {
	dir    string
	bin    string
	id     *stack.Identity
	sim    *wxpaysim.Sim
	simURL string
	srv    *http.Server
}

func newEnv(ctx context.Context, dir string) (*env, error) {
	bin, err := stack.BuildGateway(ctx, dir)
	if err != nil {
		return nil, err
	}
	id, err := stack.NewIdentity(filepath.Join(dir, "keys"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sim := wxpaysim.New(id.Keys, wxpaysim.Options{})
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &env{dir: dir, bin: bin, id: id, sim: sim, simURL: "http://" + ln.Addr().String(), srv: srv}, nil
}

func (e *env) close() {
	_ = e.srv.Close()
	e.sim.Close()
}

// target is one backend ready to measure: a running gateway, a reader of
// its database (for the ledger checks) and a second, empty database of
// the same kind for the ceiling.
type target struct {
	name    string
	gw      *stack.Gateway
	ledger  *ledgerReader
	ceiling *sql.DB
	version string
	// policy is the gateway's group commit, which the grouped ceiling
	// reproduces.
	policy  gateway.BatchPolicy
	cleanup []func()
}

func (t *target) close() {
	for i := len(t.cleanup) - 1; i >= 0; i-- {
		t.cleanup[i]()
	}
}

func openTarget(ctx context.Context, e *env, o Options, name string) (*target, error) {
	t := &target{name: name}
	tag := strings.ToLower(gateway.NewToken()[:8])
	var gwDSN, ceilDSN, redis string
	switch name {
	case "mysql":
		for _, db := range []string{"gwbench_" + tag, "gwbench_ceil_" + tag} {
			drop, err := stack.CreateDatabase(ctx, o.MySQL, db)
			if err != nil {
				t.close()
				return nil, err
			}
			t.cleanup = append(t.cleanup, drop)
		}
		server := strings.TrimSuffix(o.MySQL, "/")
		gwDSN, ceilDSN = "mysql://"+server+"/gwbench_"+tag, "mysql://"+server+"/gwbench_ceil_"+tag
		redis = o.Redis
		if redis != "" {
			t.cleanup = append(t.cleanup, func() { dropRedisKeys(redis, redisPrefix(tag)) })
		}
	case "sqlite":
		gwDSN, ceilDSN = filepath.Join(e.dir, tag+"-gw.db"), filepath.Join(e.dir, tag+"-ceil.db")
	default:
		return nil, fmt.Errorf("unknown backend %q (want mysql or sqlite)", name)
	}
	if err := t.openCeiling(ctx, ceilDSN); err != nil {
		t.close()
		return nil, err
	}
	t.gw = &stack.Gateway{Bin: e.bin, Dir: e.dir, Env: append(e.id.Env(gwDSN, redis, e.simURL, ""),
		"GATEWAY_REDIS_PREFIX="+redisPrefix(tag))}
	t.gw.Env = append(t.gw.Env, gatewayEnv()...)
	var err error
	if t.policy, err = gatewayBatchPolicy(gatewayEnv()); err != nil {
		t.close()
		return nil, err
	}
	if err = t.gw.Start(ctx); err != nil {
		t.close()
		return nil, fmt.Errorf("start gateway (log in %s): %w", filepath.Join(e.dir, "gateway.log"), err)
	}
	t.cleanup = append(t.cleanup, t.gw.Stop)
	if t.ledger, err = openLedgerReader(ctx, gwDSN); err != nil {
		t.close()
		return nil, err
	}
	t.cleanup = append(t.cleanup, t.ledger.close)
	return t, nil
}

// redisPrefix holds the keys of one backend run's gateway.
func redisPrefix(tag string) string { return "gwbench:" + tag + ":" }

// dropRedisKeys removes a finished run's keys (about 300,000 gate marks
// of a day's TTL, 60 MB) from what is often a shared Redis; the run's
// databases are dropped too. It runs after the gateway has stopped.
func dropRedisKeys(addr, prefix string) {
	c := redisstore.NewClient(redisstore.Config{Addr: addr, ReadTimeout: 5 * time.Second,
		WriteTimeout: 5 * time.Second, PoolTimeout: 5 * time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := redisstore.DeletePrefix(ctx, c, prefix); err != nil {
		fmt.Fprintf(os.Stderr, "gwbench: keys under %s left in Redis: %v\n", prefix, err)
	}
}

func (t *target) openCeiling(ctx context.Context, dsn string) error {
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: dsn})
	if err != nil {
		return err
	}
	if err := ledger.Migrate(ctx, db, dialect); err != nil {
		return err
	}
	t.ceiling, err = db.DB()
	if err != nil {
		return err
	}
	t.cleanup = append(t.cleanup, func() { t.ceiling.Close() })
	// The version, and the settings that decide what a commit costs.
	q := `SELECT CONCAT(VERSION(), '; innodb_flush_log_at_trx_commit ', @@innodb_flush_log_at_trx_commit,
		', sync_binlog ', @@sync_binlog, ', log_bin ', IF(@@log_bin, 'ON', 'OFF'))`
	if dialect != migrations.MySQL {
		q = `SELECT 'SQLite ' || sqlite_version() || '; journal_mode ' || (SELECT journal_mode FROM pragma_journal_mode)
			|| ', synchronous ' || (SELECT CASE synchronous WHEN 0 THEN 'OFF' WHEN 1 THEN 'NORMAL' WHEN 2 THEN 'FULL'
			ELSE 'EXTRA' END FROM pragma_synchronous)`
	}
	if err := t.ceiling.QueryRowContext(ctx, q).Scan(&t.version); err != nil {
		return fmt.Errorf("database version: %w", err)
	}
	return nil
}
