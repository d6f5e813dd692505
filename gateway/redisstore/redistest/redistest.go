// Package redistest gives tests the real Redis at GATEWAY_TEST_REDIS_ADDR
// under a key prefix of their own; without it they skip (fail on CI).
package redistest

import (
	"context"
	"os"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/ledger/ledgertest"
)

// Config returns a Config for the test Redis with a fresh key prefix whose
// keys are deleted when the test ends.
func Config(t testing.TB) redisstore.Config {
	t.Helper()
	addr := os.Getenv("GATEWAY_TEST_REDIS_ADDR")
	if addr == "" {
		ledgertest.Unavailable(t, "GATEWAY_TEST_REDIS_ADDR is not set")
	}
	// Timeouts for a loaded test machine, the dial's too: its default of
	// 200 ms was seen running out on loopback under the race-enabled suite.
	cfg := redisstore.Config{Addr: addr, Prefix: "gwtest:" + gateway.NewToken()[:12] + ":",
		OpTimeout: 2 * time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second,
		DialTimeout: time.Second}
	c := redisstore.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		ledgertest.Unavailable(t, "redis at "+addr+" unreachable: "+err.Error())
	}
	t.Cleanup(func() {
		if _, err := redisstore.DeletePrefix(context.Background(), c, cfg.Prefix); err != nil {
			t.Logf("redis keys under %s left behind: %v", cfg.Prefix, err)
		}
		c.Close()
	})
	return cfg
}

// Store returns a redisstore.Store on the test Redis.
func Store(t testing.TB) *redisstore.Store {
	cfg := Config(t)
	c := redisstore.NewClient(cfg)
	s := redisstore.New(c, cfg)
	t.Cleanup(func() { s.Close(); c.Close() })
	return s
}
