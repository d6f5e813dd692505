package gateway_test

import (
	"context"
	"net"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

// merchantQuota is a Global limit: the merchant's refund applications.
var merchantQuota = gateway.Limit{PerMinute: 1, Burst: 50, Global: true}

// quotaAllowed is how many of 100 calls per instance three gateway
// instances (Instances: 3) on cfg's Redis allow at one instant.
func quotaAllowed(t *testing.T, cfg redisstore.Config) int {
	n := 0
	for range 3 {
		c := redisstore.NewClient(cfg)
		s := redisstore.New(c, cfg)
		t.Cleanup(func() { s.Close(); c.Close() })
		f := gateway.FallbackLimiter{Primary: s, Secondary: gateway.NewMemoryLimiter(),
			Breaker: &gateway.Breaker{Cooldown: time.Minute}, Instances: 3}
		for range 100 {
			d, err := f.Allow(context.Background(), "rl:refund-calls:all", merchantQuota)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				n++
			}
		}
	}
	return n
}

// TestMerchantQuotaWithRedisDown: three instances whose Redis is
// unreachable let through at most the quota's burst together, not three
// times it.
func TestMerchantQuotaWithRedisDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	if n := quotaAllowed(t, redisstore.Config{Addr: addr}); n > 50 || n < 45 {
		t.Fatalf("%d refund applications at one instant, want at most the burst of 50 (48: 16 per instance)", n)
	}
}

// TestMerchantQuotaWithRedisUp: on a shared Redis the three instances
// share the whole burst.
func TestMerchantQuotaWithRedisUp(t *testing.T) {
	if n := quotaAllowed(t, redistest.Config(t)); n != 50 {
		t.Fatalf("%d refund applications at one instant, want the burst of 50", n)
	}
}
