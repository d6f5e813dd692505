package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/migrations"
)

// checkMigrated refuses a start whose pool does not see the migrations
// just applied on a connection of their own: an in-memory SQLite database
// (":memory:", mode=memory without a shared cache) is one per connection,
// and the gateway would start "ready" on an empty one.
func checkMigrated(ctx context.Context, db *sql.DB, dialect migrations.Dialect) error {
	n, err := migrations.Pending(ctx, db, dialect)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("the database's pool does not see the %d migrations just applied: an in-memory "+
			"SQLite database is one per connection; name a file", n)
	}
	return nil
}

// warnNotDurable logs an error when MySQL does not flush each commit's
// log to disk: a 2xx to WeChat Pay says the notification is durably
// committed, and with innodb_flush_log_at_trx_commit 0 or 2 a power cut
// loses up to a second of commits WeChat Pay will never send again.
func warnNotDurable(ctx context.Context, db *sql.DB, dialect migrations.Dialect) {
	if dialect != migrations.MySQL {
		return
	}
	var flush sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT @@innodb_flush_log_at_trx_commit").Scan(&flush); err != nil {
		slog.Warn("could not read innodb_flush_log_at_trx_commit", "err", err)
		return
	}
	if !durableFlush(flush.String) {
		slog.Error("the database does not flush each commit to disk (innodb_flush_log_at_trx_commit is not 1): "+
			"notifications answered 2xx can be lost in a power cut; set it to 1", "innodb_flush_log_at_trx_commit", flush.String)
	}
}

func durableFlush(v string) bool { return strings.TrimSpace(v) == "1" }

// checkRedis pings a configured Redis once at start. A wrong password is
// a configuration error and ends the start (every instance would run on
// its own in-process guards, looking healthy); Redis merely unreachable is
// what the fallbacks are for, and is logged.
func checkRedis(ctx context.Context, c *redis.Client, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := c.Ping(pctx).Err()
	switch {
	case err == nil:
		return nil
	case redisAuthError(err):
		return fmt.Errorf("redis: %w: check redis.username, redis.password (GATEWAY_REDIS_PASSWORD) and redis.db", err)
	case redisTLSError(err):
		return fmt.Errorf("redis: %w: check redis.tls, redis.tls_ca_file and the host name in redis.addr", err)
	}
	attrs := []any{"err", err}
	if c.Options().TLSConfig != nil { // a plain Redis waits for the end of a line that a TLS hello never sends
		attrs = append(attrs, "hint", "redis.tls is on: a Redis that does not speak TLS never answers the handshake")
	}
	slog.Error("redis does not answer at start; running on in-process guards until it does (per instance: "+
		"rate limits, the failed-key lockout and notification locks are not shared)", attrs...)
	return nil
}

// redisAuthError reports whether err is Redis refusing the credentials or
// the database number.
func redisAuthError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	for _, p := range []string{"NOAUTH", "WRONGPASS", "ERR invalid password", "ERR AUTH", "ERR DB index", "ERR invalid DB index"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// redisTLSError reports whether err is a TLS set-up that can never work:
// a certificate not verified, or an answer that is no TLS. (A plain Redis
// itself answers a ClientHello with nothing: that looks like no answer.)
func redisTLSError(err error) bool {
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var name x509.HostnameError
	var authority x509.UnknownAuthorityError
	return errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &name) || errors.As(err, &authority)
}

// redisStartCheck bounds the start's Redis check: a restart while Redis
// is down waits no longer (a var: tests on a loaded machine raise it).
var redisStartCheck = 500 * time.Millisecond

// checkGuards checks a configured Redis at start, and warns when a MySQL
// ledger (several instances, as a rule) runs without one.
func (m *Main) checkGuards(ctx context.Context) error {
	if m.Redis != nil {
		warnQuotaShare(m.Config.RateLimit, m.Config.Redis.Instances)
		return checkRedis(ctx, m.Redis, redisStartCheck)
	}
	if m.Store.Dialect() == migrations.MySQL {
		slog.Warn("no redis configured: rate limits, the failed-key lockout and notification locks are per " +
			"instance; with several instances set redis.addr (the database's unique keys still keep every effect once)")
	}
	return nil
}

// warnQuotaShare warns when the merchant-wide refund quota is smaller than
// the number of instances sharing it: while Redis fails each instance
// still allows at least one call, so together they could exceed it.
func warnQuotaShare(r RateLimitConfig, instances int) {
	if r.RefundCallsPerMinute <= 0 { // no quota
		return
	}
	burst := max(r.RefundCallsBurst, 1) // 0 stands for 1
	if r.RefundCallsPerMinute < instances || burst < instances {
		slog.Warn("rate_limit.refund_calls_per_minute or refund_calls_burst is below redis.instances: while Redis "+
			"fails each instance allows at least one call, so together they may exceed the quota",
			"refund_calls_per_minute", r.RefundCallsPerMinute, "refund_calls_burst", r.RefundCallsBurst,
			"instances", instances)
	}
}
