package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

func TestMemoryLimiterGCRA(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewMemoryLimiter()
	l.now = func() time.Time { return now }
	limit := Limit{PerMinute: 60, Burst: 3} // one per second, three at once
	steps := []struct {
		name    string
		advance time.Duration
		allowed bool
		retry   time.Duration
	}{
		{"burst 1", 0, true, 0},
		{"burst 2", 0, true, 0},
		{"burst 3", 0, true, 0},
		{"over burst", 0, false, time.Second},
		{"half a second later", 500 * time.Millisecond, false, 500 * time.Millisecond},
		{"one interval later", 500 * time.Millisecond, true, 0},
		{"again refused", 0, false, time.Second},
		{"idle refills the burst", 10 * time.Second, true, 0},
		{"burst 2 after idle", 0, true, 0},
		{"burst 3 after idle", 0, true, 0},
		{"over burst after idle", 0, false, time.Second},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		d, err := l.Allow(context.Background(), "k", limit)
		if err != nil || d.Allowed != s.allowed || d.RetryAfter != s.retry {
			t.Fatalf("%s: got %+v err=%v, want allowed=%v retry=%v", s.name, d, err, s.allowed, s.retry)
		}
	}
	if d, _ := l.Allow(context.Background(), "other", limit); !d.Allowed {
		t.Fatalf("another key shares the limit: %+v", d)
	}
}

type limiterFunc func(ctx context.Context, key string, limit Limit) (Decision, error)

func (f limiterFunc) Allow(ctx context.Context, key string, limit Limit) (Decision, error) {
	return f(ctx, key, limit)
}

func (f limiterFunc) Peek(ctx context.Context, key string, limit Limit) (Decision, error) {
	return f(ctx, key, limit)
}

func TestRateLimitMiddleware(t *testing.T) {
	gin.SetMode(gin.TestMode)
	limit := Limit{PerMinute: 60, Burst: 2}
	refuse := limiterFunc(func(context.Context, string, Limit) (Decision, error) {
		return Decision{RetryAfter: 1500 * time.Millisecond}, nil
	})
	broken := limiterFunc(func(context.Context, string, Limit) (Decision, error) {
		return Decision{}, errors.New("redis down")
	})
	byHeader := func(c *gin.Context) string { return c.GetHeader("X-Caller") }
	cases := []struct {
		name       string
		limiter    Limiter
		limit      Limit
		caller     string
		wantStatus int
		wantRetry  string
	}{
		{"refused", refuse, limit, "a", http.StatusTooManyRequests, "2"},
		{"no key is not limited", refuse, limit, "", http.StatusOK, ""},
		{"zero limit is off", refuse, Limit{}, "a", http.StatusOK, ""},
		{"nil limiter is off", nil, limit, "a", http.StatusOK, ""},
		{"broken limiter lets through", broken, limit, "a", http.StatusOK, ""},
		{"memory limiter allows within burst", NewMemoryLimiter(), limit, "a", http.StatusOK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := gin.New()
			r.GET("/x", RateLimit(tc.limiter, byHeader, tc.limit), func(c *gin.Context) { c.Status(http.StatusOK) })
			req := httptest.NewRequest("GET", "/x", nil)
			req.Header.Set("X-Caller", tc.caller)
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != tc.wantStatus || w.Header().Get("Retry-After") != tc.wantRetry {
				t.Fatalf("status=%d Retry-After=%q, want %d %q", w.Code, w.Header().Get("Retry-After"), tc.wantStatus, tc.wantRetry)
			}
			if tc.wantStatus == http.StatusTooManyRequests && !strings.Contains(w.Body.String(), `"code":"ERATE_LIMITED"`) {
				t.Fatalf("body=%s, want code ERATE_LIMITED", w.Body)
			}
		})
	}
}

func TestFallbackLimiterUsesSecondaryWhenPrimaryFails(t *testing.T) {
	broken := limiterFunc(func(context.Context, string, Limit) (Decision, error) {
		return Decision{}, errors.New("redis down")
	})
	var hooked []string
	f := FallbackLimiter{Primary: broken, Secondary: NewMemoryLimiter(), Hook: func(w string) { hooked = append(hooked, w) }}
	limit := Limit{PerMinute: 1, Burst: 1}
	first, err1 := f.Allow(context.Background(), "k", limit)
	second, err2 := f.Allow(context.Background(), "k", limit)
	if err1 != nil || err2 != nil || !first.Allowed || second.Allowed {
		t.Fatalf("first=%+v/%v second=%+v/%v, want allowed then refused by the memory limiter", first, err1, second, err2)
	}
	if len(hooked) != 2 || hooked[0] != "ratelimit" {
		t.Fatalf("hook calls = %v, want two ratelimit fallbacks", hooked)
	}
}

// delayedLimiter is a Redis that answers every call after delay, within
// its own timeout: slow, not down, so the breaker has no cause to open.
type delayedLimiter struct {
	delay time.Duration
	calls atomic.Int32
}

func (d *delayedLimiter) Allow(ctx context.Context, _ string, _ Limit) (Decision, error) {
	return d.wait(ctx)
}
func (d *delayedLimiter) Peek(ctx context.Context, _ string, _ Limit) (Decision, error) {
	return d.wait(ctx)
}

func (d *delayedLimiter) wait(ctx context.Context) (Decision, error) {
	d.calls.Add(1)
	select {
	case <-time.After(d.delay):
		return Decision{Allowed: true}, nil
	case <-ctx.Done():
		return Decision{}, ctx.Err()
	}
}

// TestRequestWaitsForRedisWithinItsBudget: one request's three limiter
// calls (a key's two lockout looks and its rate limit) to a Redis taking
// 400 ms each wait 600 ms in all, the budget: the second is cut short and
// answered from memory, the third goes to memory at once. The breaker
// stays closed (Redis answered; the request ran out of time), so the
// next request asks Redis again.
// The budget is one and a half calls: the first call's answer has 200 ms
// to be seen within it on a loaded machine (with 200 ms and 250 ms a late
// wake-up of 50 ms spent the whole budget on the first call).
func TestRequestWaitsForRedisWithinItsBudget(t *testing.T) {
	slow := &delayedLimiter{delay: 400 * time.Millisecond}
	b := &Breaker{Cooldown: time.Minute}
	f := FallbackLimiter{Primary: slow, Secondary: NewMemoryLimiter(), Breaker: b, Budget: 600 * time.Millisecond}
	limit := Limit{PerMinute: 60, Burst: 5}
	ctx := WithRedisWait(context.Background())
	start := time.Now()
	for i := range 3 {
		if d, err := f.Peek(ctx, "k", limit); err != nil || !d.Allowed {
			t.Fatalf("call %d: %+v %v", i, d, err)
		}
	}
	// Under the 1.2 s the three calls would take without a budget.
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("three calls waited %v for Redis, budget 600ms", waited)
	}
	if n := slow.calls.Load(); n != 2 {
		t.Errorf("%d calls reached Redis, want 2 (the third had no time left)", n)
	}
	if b.Open() {
		t.Fatal("a call cut by the request's budget opened the breaker")
	}
	if _, err := f.Allow(WithRedisWait(context.Background()), "k", limit); err != nil || slow.calls.Load() != 3 {
		t.Fatalf("the next request did not ask Redis: %d calls, %v", slow.calls.Load(), err)
	}
}

// quotaInstances are n gateway instances' refund services over primary,
// each with its own memory fallback on the clock now, Instances n.
func quotaInstances(n int, primary Limiter, now *time.Time, quota Limit) []*RefundService {
	svcs := make([]*RefundService, n)
	for i := range svcs {
		mem := NewMemoryLimiter()
		mem.now = func() time.Time { return *now }
		f := FallbackLimiter{Primary: primary, Secondary: mem, Instances: n}
		svcs[i] = &RefundService{cfg: RefundConfig{Calls: f, CallLimit: quota}}
	}
	return svcs
}

// admitted is how many of tries refund applications per instance the
// instances let through.
func admitted(svcs []*RefundService, tries int) (n int) {
	for _, s := range svcs {
		for range tries {
			if s.admitCall(context.Background()) == nil {
				n++
			}
		}
	}
	return n
}

// TestGlobalQuotaSharedOutWhileRedisFails: three instances, Redis down,
// each decides refund applications alone; together they let through at
// most the merchant's burst at one instant, and at most the burst plus
// one second's rate within a second (WeChat Pay's 150/s).
func TestGlobalQuotaSharedOutWhileRedisFails(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	down := limiterFunc(func(context.Context, string, Limit) (Decision, error) {
		return Decision{}, errors.New("redis down")
	})
	svcs := quotaInstances(3, down, &now, Limit{PerMinute: 6000, Burst: 50}) // 100/s
	first := admitted(svcs, 100)
	if first > 50 || first < 45 {
		t.Fatalf("%d applications at one instant, want the burst of 50 shared out (48)", first)
	}
	total := first
	for range 100 { // the rest of the second, every 10 ms
		now = now.Add(10 * time.Millisecond)
		total += admitted(svcs, 5)
	}
	if total > 150 || total < 140 {
		t.Fatalf("%d applications within a second, want at most 150 (burst 50 + 100/s)", total)
	}
}

// TestGlobalQuotaWholeOnRedis: with Redis up (a shared limiter) the
// instances share the whole quota, not their fallback shares of it.
func TestGlobalQuotaWholeOnRedis(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	shared := NewMemoryLimiter()
	shared.now = func() time.Time { return now }
	if n := admitted(quotaInstances(3, shared, &now, Limit{PerMinute: 6000, Burst: 50}), 100); n != 50 {
		t.Fatalf("%d applications at one instant, want the burst of 50", n)
	}
}

// TestCallerLimitWholePerInstanceWhileRedisFails: a caller's own limit is
// not divided: each instance falls back to all of it.
func TestCallerLimitWholePerInstanceWhileRedisFails(t *testing.T) {
	down := limiterFunc(func(context.Context, string, Limit) (Decision, error) {
		return Decision{}, errors.New("redis down")
	})
	limit := Limit{PerMinute: 60, Burst: 5}
	for i := range 3 {
		f := FallbackLimiter{Primary: down, Secondary: NewMemoryLimiter(), Instances: 3}
		for j := range 6 {
			d, err := f.Allow(context.Background(), "rl:refunds:openid", limit)
			if err != nil || d.Allowed != (j < 5) {
				t.Fatalf("instance %d, request %d: %+v %v, want the whole burst of 5 allowed", i, j+1, d, err)
			}
		}
	}
}
