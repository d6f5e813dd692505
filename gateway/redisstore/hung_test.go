package redisstore_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
)

// hungRedis listens on a port that accepts connections and never answers,
// and returns its address.
func hungRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // hold it open, say nothing
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestHungRedisCostsEachCallItsOpTimeout: against a Redis that accepts and
// never answers, every call of the store gives up at its op timeout, not
// at the socket's read timeout (here 10 s, far above it). A call that lost
// its own deadline (or a client that ignored the context's) would hold a
// payment notification past WeChat Pay's 5 s.
func TestHungRedisCostsEachCallItsOpTimeout(t *testing.T) {
	cfg := redisstore.Config{Addr: hungRedis(t), OpTimeout: 100 * time.Millisecond,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, DialTimeout: 10 * time.Second}
	client := redisstore.NewClient(cfg)
	s := redisstore.New(client, cfg)
	t.Cleanup(func() { s.Close(); client.Close() })
	ctx := context.Background()
	k := gateway.GateKeys{Nonce: "hn", NotifyID: "h-id", Lock: "pay:h"}
	limit := gateway.Limit{PerMinute: 60, Burst: 1}
	calls := map[string]func() error{
		"lock":   func() error { _, _, err := s.TryLock(ctx, "h", time.Minute); return err },
		"unlock": func() error { return s.Unlock(ctx, "h", "token") },
		"allow":  func() error { _, err := s.Allow(ctx, "rl:h", limit); return err },
		"peek":   func() error { _, err := s.Peek(ctx, "rl:h", limit); return err },
		"admit":  func() error { _, err := s.Admit(ctx, k, ttls); return err },
		"finish": func() error { return s.Finish(ctx, k, "token", true, ttls) },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		if took := time.Since(start); err == nil || took > 3*time.Second {
			t.Errorf("%s on a hung redis: err=%v after %v; want an error within the op timeout (100 ms), "+
				"far from the 10 s read timeout", name, err, took)
		}
	}
}

// countDials counts the connections a client dials.
type countDials struct{ dials atomic.Int64 }

func (h *countDials) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.dials.Add(1)
		return next(ctx, network, addr)
	}
}
func (h *countDials) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *countDials) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRefusingRedisIsDialedOncePerTry: a Redis that refuses connections
// (a closed port, a bad certificate) costs a call one dial per try of the
// call, not go-redis's default five dials 100 ms apart, which spend the
// op timeout of every request that meets it.
func TestRefusingRedisIsDialedOncePerTry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every dial is refused
	cfg := redisstore.Config{Addr: addr, OpTimeout: 5 * time.Second}
	client := redisstore.NewClient(cfg)
	s := redisstore.New(client, cfg)
	t.Cleanup(func() { s.Close(); client.Close() })
	hook := &countDials{}
	client.AddHook(hook)
	// Unlock, not TryLock: a failed TryLock also queues a release of the
	// lock it may have taken, whose dial could land before the count.
	if err := s.Unlock(context.Background(), "refused", "token"); err == nil {
		t.Fatal("an unlock on a refusing redis succeeded")
	}
	// Two tries at most (MaxRetries 1), one dial each.
	if n := hook.dials.Load(); n > 2 {
		t.Fatalf("one call dialed a refusing redis %d times, want at most 2 (one per try)", n)
	}
}
