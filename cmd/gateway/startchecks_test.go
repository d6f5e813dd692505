package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"paygateway/ledger/ledgertest"
	"paygateway/migrations"
)

// TestInMemoryDatabaseIsRefused: ":memory:" is one database per
// connection, so the migrations applied on their own connection are not
// the pool's: the start fails instead of serving "ready" on an empty one.
func TestInMemoryDatabaseIsRefused(t *testing.T) {
	cfg := testConfig(t, backend{name: "sqlite"})
	cfg.Database.DSN = ":memory:"
	m, err := NewMain(context.Background(), cfg)
	if err == nil {
		m.Close()
		t.Fatal("a gateway started on :memory:")
	}
	if !strings.Contains(err.Error(), "in-memory") {
		t.Fatalf("err = %v, want it to name the in-memory database", err)
	}
}

// TestRedisCredentialsAreCheckedAtStart: a wrong password or database
// number ends the start (every instance would otherwise run on its own
// in-process guards and look healthy); a Redis merely unreachable is
// what the fallbacks are for, and the gateway starts.
func TestRedisCredentialsAreCheckedAtStart(t *testing.T) {
	for name, set := range map[string]func(c *Config){
		"wrong password": func(c *Config) { c.Redis.Addr, c.Redis.Password = refusingRedis(t), "not-the-password" },
		"wrong database": func(c *Config) { c.Redis.DB = 4096 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, backend{name: "sqlite+redis", redis: true})
			set(&cfg)
			m, err := NewMain(context.Background(), cfg)
			if err == nil {
				m.Close()
				t.Fatal("the gateway started")
			}
			if !strings.Contains(err.Error(), "redis.password") {
				t.Fatalf("err = %v, want it to point at redis.password", err)
			}
		})
	}
	cfg := testConfig(t, backend{name: "sqlite+redis", redis: true})
	cfg.Redis.Addr = freeAddr(t)
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Redis unreachable at start: %v, want a start on the fallbacks", err)
	}
	m.Close()
}

// TestDurabilityIsChecked: innodb_flush_log_at_trx_commit other than 1
// is named in an ERROR at start; the test server's (1) gives none.
func TestDurabilityIsChecked(t *testing.T) {
	if durableFlush("2") || durableFlush("0") || !durableFlush("1") {
		t.Fatal("durableFlush")
	}
	db, err := ledgertest.OpenMySQL(t).DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	buf := &logBuffer{}
	restoreLogging(t)
	slog.SetDefault(slog.New(slog.NewJSONHandler(buf, nil)))
	warnNotDurable(context.Background(), db, migrations.MySQL)
	if out := buf.String(); out != "" {
		t.Fatalf("log: %s, want nothing on a durable server", out)
	}
}

// refusingRedis is a server speaking Redis's protocol that answers every
// command WRONGPASS, as a Redis with another password does (the test
// server has none, and go-redis then ignores a password).
func refusingRedis(t *testing.T) string { return serveTCP(t, refuseCommands) }

// refuseCommands reads RESP arrays of bulk strings from c and answers each
// with a WRONGPASS error.
func refuseCommands(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		head, err := r.ReadString('\n')
		if err != nil {
			return
		}
		n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "*")))
		for i := 0; i < 2*n; i++ { // each argument: $len, then its bytes
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
		}
		if _, err := c.Write([]byte("-WRONGPASS invalid username-password pair or user is disabled.\r\n")); err != nil {
			return
		}
	}
}

// TestQuotaBelowInstancesWarns: a merchant-wide quota smaller than the
// instances sharing it cannot be divided among them while Redis fails
// (each keeps at least one call): the start says so.
func TestQuotaBelowInstancesWarns(t *testing.T) {
	buf := &logBuffer{}
	restoreLogging(t)
	slog.SetDefault(slog.New(slog.NewJSONHandler(buf, nil)))
	r := RateLimitConfig{RefundCallsPerMinute: 6000, RefundCallsBurst: 50}
	warnQuotaShare(r, 50)
	if buf.String() != "" {
		t.Fatalf("a quota the instances can share warned: %s", buf)
	}
	warnQuotaShare(RateLimitConfig{}, 64) // no quota at all
	if buf.String() != "" {
		t.Fatalf("no quota warned: %s", buf)
	}
	warnQuotaShare(r, 64)
	if !strings.Contains(buf.String(), "below redis.instances") {
		t.Fatalf("a burst of 50 over 64 instances: log %q, want a warning", buf)
	}
	buf.Reset()
	warnQuotaShare(RateLimitConfig{RefundCallsPerMinute: 6000}, 2) // a burst of 0 is 1
	if !strings.Contains(buf.String(), "below redis.instances") {
		t.Fatalf("a burst of 0 over 2 instances: log %q, want a warning", buf)
	}
}

// TestRefusedConfigLeavesTheDatabaseAlone: a setting refused at start
// (rate limits, API keys, the refund API's timings, the WeChat Pay keys
// and the merchant's serial, the daily reconciliation's time) is refused
// before the database is opened, so a release whose config is wrong does
// not migrate the production database on its way to refusing to start.
func TestRefusedConfigLeavesTheDatabaseAlone(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	bad := map[string]func(*Config){
		"rate_limit":                          func(c *Config) { c.RateLimit.RefundsBurst = -1 },
		"auth.api_keys":                       func(c *Config) { c.Auth.APIKeys = []string{"no-role"} },
		"refunds":                             func(c *Config) { c.Refunds.SafetyBuffer = time.Millisecond },
		"wechatpay.merchant_serial":           func(c *Config) { c.WechatPay.MerchantSerial = "" },
		"wechatpay.merchant_private_key_file": func(c *Config) { c.WechatPay.MerchantPrivateKeyFile = missing },
		"wechatpay.public_key_file":           func(c *Config) { c.WechatPay.PublicKeyFile = missing },
		"wechatpay.platform_cert_files":       func(c *Config) { c.WechatPay.PlatformCertFiles = []string{missing} },
		"finance.daily_reconcile_at":          func(c *Config) { c.Finance.DailyReconcileAt = "25:99" },
	}
	for name, spoil := range bad {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, backend{name: "mysql", mysql: true})
			cfg.Refunds.JWT.HS256Secret, cfg.Refunds.JWT.Audience = jwtSecret, jwtAudience
			k, dir := testKeys(t)
			w := &cfg.WechatPay
			w.MerchantSerial, w.MerchantPrivateKeyFile = k.MerchantSerial, filepath.Join(dir, "merchant_private_key.pem")
			spoil(&cfg)
			startRefused(t, cfg, name)
			db, err := sql.Open("mysql", strings.TrimPrefix(cfg.Database.DSN, "mysql://"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var tables int
			if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()").
				Scan(&tables); err != nil || tables != 0 {
				t.Fatalf("%d tables in the database (err %v), want none: it was migrated", tables, err)
			}
		})
	}
}

// TestTLSToAPlainRedisIsHinted: with redis.tls on, a Redis that does not
// speak TLS waits for the end of a line the TLS hello never sends, so the
// start sees no answer at all; the log says what to check. Without TLS
// the same silence gets no such hint.
func TestTLSToAPlainRedisIsHinted(t *testing.T) {
	silent := serveTCP(t, func(c net.Conn) { defer c.Close(); _, _ = io.Copy(io.Discard, c) })
	for _, tlsOn := range []bool{true, false} {
		buf := &logBuffer{}
		restoreLogging(t)
		slog.SetDefault(slog.New(slog.NewJSONHandler(buf, nil)))
		opts := &redis.Options{Addr: silent, MaxRetries: -1, ContextTimeoutEnabled: true} // as redisstore.NewClient
		if tlsOn {
			opts.TLSConfig = &tls.Config{ServerName: "localhost"}
		}
		c := redis.NewClient(opts)
		if err := checkRedis(context.Background(), c, 300*time.Millisecond); err != nil {
			t.Fatalf("tls %v: %v, want a start on the fallbacks", tlsOn, err)
		}
		c.Close()
		if hinted := strings.Contains(buf.String(), "does not speak TLS"); hinted != tlsOn {
			t.Fatalf("tls %v: log %s; want the TLS hint only with TLS on", tlsOn, buf)
		}
	}
}
