package redisstore_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

func TestNonceFirstSeenOnce(t *testing.T) {
	s := redistest.Store(t)
	ctx := context.Background()
	var fresh atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.FirstSeen(ctx, "n1", time.Minute)
			if err != nil {
				t.Error(err)
			}
			if ok {
				fresh.Add(1)
			}
		}()
	}
	wg.Wait()
	if fresh.Load() != 1 {
		t.Fatalf("fresh = %d, want 1", fresh.Load())
	}
}

func TestLockOnlyOwnerReleases(t *testing.T) {
	s := redistest.Store(t)
	ctx := context.Background()
	tok, ok, err := s.TryLock(ctx, "k", time.Second)
	if err != nil || !ok {
		t.Fatalf("first lock: ok=%v err=%v", ok, err)
	}
	if _, ok, _ := s.TryLock(ctx, "k", time.Second); ok {
		t.Fatal("second lock succeeded while held")
	}
	if err := s.Unlock(ctx, "k", "not-the-token"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TryLock(ctx, "k", time.Second); ok {
		t.Fatal("a stranger's unlock released the lock")
	}
	if err := s.Unlock(ctx, "k", tok); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TryLock(ctx, "k", time.Second); !ok {
		t.Fatal("lock not free after owner's unlock")
	}
}

// TestDeadRedisFailsFastAndFallsBack points the store at a port that
// accepts connections but never answers (a hung Redis) and checks that
// each call gives up within the configured bound and the fallback works.
func TestDeadRedisFailsFastAndFallsBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	cfg := redisstore.Config{Addr: ln.Addr().String(), OpTimeout: 150 * time.Millisecond}
	s := redisstore.New(redisstore.NewClient(cfg), cfg)
	nonces := gateway.FallbackNonces{Primary: s, Secondary: gateway.NewMemoryNonces(10)}
	start := time.Now()
	ok, err := nonces.FirstSeen(context.Background(), "n", time.Minute)
	if err != nil || !ok {
		t.Fatalf("fallback: ok=%v err=%v", ok, err)
	}
	if ok, _ := nonces.FirstSeen(context.Background(), "n", time.Minute); ok {
		t.Fatal("fallback cache forgot the nonce")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("two calls to a hung redis took %v", took)
	}
}
