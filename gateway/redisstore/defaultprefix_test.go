package redisstore_test

import (
	"context"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

// TestEmptyPrefixMeansGw: a store configured without a prefix keeps its
// keys under "gw:", never at the top of a Redis other programs share
// (where "lock:…" or "done:…" may be theirs).
func TestEmptyPrefixMeansGw(t *testing.T) {
	cfg := redistest.Config(t)
	cfg.Prefix = ""
	client := redisstore.NewClient(cfg)
	s := redisstore.New(client, cfg)
	t.Cleanup(func() { s.Close(); client.Close() })
	ctx := context.Background()
	name := "prefix-test-" + gateway.NewToken()[:12]
	token, ok, err := s.TryLock(ctx, name, time.Minute)
	if err != nil || !ok {
		t.Fatalf("lock: ok=%v err=%v", ok, err)
	}
	t.Cleanup(func() { _ = s.Unlock(context.Background(), name, token) })
	if n, err := client.Exists(ctx, "gw:lock:"+name).Result(); err != nil || n != 1 {
		t.Fatalf("lock key gw:lock:%s: exists=%d err=%v; want the lock under the default prefix gw:", name, n, err)
	}
}
