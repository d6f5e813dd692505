package redisstore_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

// TestRateLimitSharedAcrossInstances gives two stores (two gateway
// instances) the same Redis and prefix: together they allow exactly the
// burst, concurrently.
func TestRateLimitSharedAcrossInstances(t *testing.T) {
	cfg := redistest.Config(t)
	a := redisstore.New(redisstore.NewClient(cfg), cfg)
	b := redisstore.New(redisstore.NewClient(cfg), cfg)
	t.Cleanup(func() { a.Client().Close(); b.Client().Close() })
	limit := gateway.Limit{PerMinute: 1, Burst: 5}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			d, err := s.Allow(context.Background(), "rl:test:caller", limit)
			if err != nil {
				t.Error(err)
				return
			}
			if d.Allowed {
				allowed.Add(1)
			} else if d.RetryAfter <= 0 || d.RetryAfter > time.Minute {
				t.Errorf("refused with RetryAfter=%v, want within one interval", d.RetryAfter)
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 5 {
		t.Fatalf("allowed %d, want the burst of 5", allowed.Load())
	}
	if d, err := a.Allow(context.Background(), "rl:test:other", limit); err != nil || !d.Allowed {
		t.Fatalf("another caller: %+v %v, want allowed", d, err)
	}
}

func TestRateLimitRefillsAfterInterval(t *testing.T) {
	s := redistest.Store(t)
	limit := gateway.Limit{PerMinute: 600, Burst: 1} // one per 100 ms
	ctx := context.Background()
	if d, err := s.Allow(ctx, "k", limit); err != nil || !d.Allowed {
		t.Fatalf("first: %+v %v", d, err)
	}
	d, err := s.Allow(ctx, "k", limit)
	if err != nil || d.Allowed {
		t.Fatalf("second: %+v %v, want refused", d, err)
	}
	time.Sleep(d.RetryAfter + 20*time.Millisecond)
	if d, err := s.Allow(ctx, "k", limit); err != nil || !d.Allowed {
		t.Fatalf("after RetryAfter: %+v %v, want allowed", d, err)
	}
}

// TestPeekCountsNothing: any number of peeks leave the whole burst to
// Allow; once it is spent, a peek sees the refusal Allow would give.
func TestPeekCountsNothing(t *testing.T) {
	s := redistest.Store(t)
	limit := gateway.Limit{PerMinute: 1, Burst: 2}
	ctx := context.Background()
	for range 10 {
		if d, err := s.Peek(ctx, "k", limit); err != nil || !d.Allowed {
			t.Fatalf("peek before any request: %+v %v", d, err)
		}
	}
	for i := range 2 {
		if d, err := s.Allow(ctx, "k", limit); err != nil || !d.Allowed {
			t.Fatalf("request %d of the burst after ten peeks: %+v %v", i+1, d, err)
		}
	}
	d, err := s.Peek(ctx, "k", limit)
	if err != nil || d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > time.Minute {
		t.Fatalf("peek past the burst: %+v %v, want refused within a minute", d, err)
	}
	if d, _ := s.Allow(ctx, "k", limit); d.Allowed {
		t.Fatal("a request past the burst was allowed")
	}
}

// TestRetriedRateLimitCountsOnce: the reply to a rate-limit call comes
// after the client's read timeout, so go-redis sends the script again
// after it already counted the request; the retry must not count it a
// second time. Burst 2: the next request is still allowed, the one after
// it refused.
func TestRetriedRateLimitCountsOnce(t *testing.T) {
	base := redistest.Config(t)
	cfg := base
	held := retryTimings(&cfg)
	cfg.Addr = slowFirstReply(t, base.Addr, "rl:retried", held)
	c := redisstore.NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	s := redisstore.New(c, cfg)
	ctx := context.Background()
	limit := gateway.Limit{PerMinute: 1, Burst: 2}
	// Load the script first: a NOSCRIPT answer to the held-back call would
	// make its retry the script's only run.
	if _, err := s.Peek(ctx, "rl:warm-up", limit); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if d, err := s.Allow(ctx, "rl:retried", limit); err != nil || !d.Allowed {
		t.Fatalf("first request: %+v %v", d, err)
	}
	if time.Since(start) < cfg.ReadTimeout {
		t.Fatal("the first reply came at once; the proxy did not hold it back")
	}
	if d, err := s.Allow(ctx, "rl:retried", limit); err != nil || !d.Allowed {
		t.Fatalf("second request of a burst of 2: %+v %v, want allowed (the retry counted the first twice)", d, err)
	}
	if d, err := s.Allow(ctx, "rl:retried", limit); err != nil || d.Allowed {
		t.Fatalf("third request: %+v %v, want refused", d, err)
	}
}
