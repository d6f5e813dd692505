package gateway

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
)

// Limit is a per-caller rate: PerMinute sustained, Burst at once. A zero
// PerMinute means unlimited.
type Limit struct {
	PerMinute int
	Burst     int
	// Global marks a limit of all callers together (a merchant-wide quota
	// such as WeChat Pay's), not one caller's: see FallbackLimiter.Instances.
	Global bool
}

// interval is the GCRA emission interval: one request per interval.
func (l Limit) interval() time.Duration { return time.Minute / time.Duration(l.PerMinute) }

func (l Limit) burst() int {
	if l.Burst < 1 {
		return 1
	}
	return l.Burst
}

// share is one instance's part of a Global limit when n instances each
// decide alone: rate and burst divided by n, rounded down but at least 1.
// Other limits are whole.
func (l Limit) share(n int) Limit {
	if !l.Global || n <= 1 || l.PerMinute <= 0 {
		return l
	}
	return Limit{PerMinute: max(l.PerMinute/n, 1), Burst: max(l.burst()/n, 1), Global: true}
}

// Decision is a limiter's answer for one request.
type Decision struct {
	Allowed    bool
	RetryAfter time.Duration // when refused: how long until one request fits
}

// Limiter decides whether the caller named by key may make one more
// request. Implementations use GCRA (generic cell rate algorithm): one
// timestamp per key, Burst requests at once, then PerMinute per minute.
// Allow counts the request when it is allowed; Peek only tells whether
// one more would be, and counts nothing (see Auth.Failures).
type Limiter interface {
	Allow(ctx context.Context, key string, limit Limit) (Decision, error)
	Peek(ctx context.Context, key string, limit Limit) (Decision, error)
}

// RateLimits are the per-caller limits of the limited route groups. The
// WeChat notification routes are never limited: WeChat must always get
// through.
type RateLimits struct {
	Ledger  Limit // /v1/ledger/*, keyed by API-key principal
	Orders  Limit // /v1/orders, keyed by API-key principal
	Refunds Limit // /v1/refunds, keyed by JWT openid
}

// RateLimit refuses callers over limit with 429 ERATE_LIMITED and a
// Retry-After header. keyFunc names the caller (e.g. PrincipalKey); an
// empty key, a nil limiter or a zero limit lets the request through. If
// the limiter fails the request goes through too: limiting protects
// capacity, it must not take the API down.
func RateLimit(l Limiter, keyFunc func(c *gin.Context) string, limit Limit) gin.HandlerFunc {
	if l == nil || limit.PerMinute <= 0 {
		return func(c *gin.Context) { c.Next() }
	}
	return func(c *gin.Context) {
		key := keyFunc(c)
		if key == "" {
			c.Next()
			return
		}
		d, err := l.Allow(c.Request.Context(), key, limit)
		if err != nil {
			slog.WarnContext(c.Request.Context(), "rate limiter unavailable, letting the request through", "err", err)
			c.Next()
			return
		}
		if !d.Allowed {
			writeError(c, rateLimited(d.RetryAfter))
			return
		}
		c.Next()
	}
}

const rateLimitedKey = "gateway.rate_limited"

// rateLimited is the ERATE_LIMITED error for a wait of retryAfter,
// rounded up to whole seconds (at least 1) as Retry-After needs.
func rateLimited(retryAfter time.Duration) *Error {
	secs := max(int(math.Ceil(retryAfter.Seconds())), 1)
	return &Error{Code: CodeRateLimited, Message: "too many requests, retry after " + strconv.Itoa(secs) + " s",
		RetryAfter: time.Duration(secs) * time.Second}
}

// PrincipalKey keys the limit by the API-key principal that Auth.Authenticate
// let through, within scope ("ledger", "orders", …).
func PrincipalKey(scope string) func(c *gin.Context) string {
	return func(c *gin.Context) string {
		if p := CurrentPrincipal(c); p.Name != "" {
			return "rl:" + scope + ":" + p.Name
		}
		return ""
	}
}

// ScopedKey keys the limit by whatever id returns (e.g. the JWT openid),
// within scope.
func ScopedKey(scope string, id func(c *gin.Context) string) func(c *gin.Context) string {
	return func(c *gin.Context) string {
		if v := id(c); v != "" {
			return "rl:" + scope + ":" + v
		}
		return ""
	}
}

// MemoryLimiter is an in-process GCRA limiter: used alone without Redis,
// and as the fallback when Redis fails (limits then hold per instance).
type MemoryLimiter struct {
	mu    sync.Mutex
	tat   map[string]time.Time // theoretical arrival time per key
	now   func() time.Time
	calls int
}

// NewMemoryLimiter returns an empty in-process limiter.
func NewMemoryLimiter() *MemoryLimiter {
	return &MemoryLimiter{tat: map[string]time.Time{}, now: time.Now}
}

// Allow implements Limiter.
func (m *MemoryLimiter) Allow(_ context.Context, key string, limit Limit) (Decision, error) {
	return m.decide(key, limit, true), nil
}

// Peek implements Limiter.
func (m *MemoryLimiter) Peek(_ context.Context, key string, limit Limit) (Decision, error) {
	return m.decide(key, limit, false), nil
}

// decide is GCRA for one request; count records it when it is allowed.
func (m *MemoryLimiter) decide(key string, limit Limit, count bool) Decision {
	if limit.PerMinute <= 0 {
		return Decision{Allowed: true}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	t := limit.interval()
	tat := m.tat[key]
	if tat.Before(now) {
		tat = now
	}
	next := tat.Add(t)
	if allowAt := next.Add(-time.Duration(limit.burst()) * t); now.Before(allowAt) {
		return Decision{RetryAfter: allowAt.Sub(now)}
	}
	if count {
		m.tat[key] = next
	}
	return Decision{Allowed: true}
}

// sweep drops keys whose arrival time has passed (they are back to a full
// burst) every few thousand calls, keeping the map bounded by the active
// callers.
func (m *MemoryLimiter) sweep(now time.Time) {
	m.calls++
	if m.calls%4096 != 0 {
		return
	}
	for k, tat := range m.tat {
		if tat.Before(now) {
			delete(m.tat, k)
		}
	}
}

// FallbackLimiter asks Primary (Redis, shared by all instances) and, when
// it fails, Secondary (memory, per instance).
type FallbackLimiter struct {
	Primary, Secondary Limiter
	Hook               func(what string) // told about each fallback (metrics)
	Breaker            *Breaker          // shared by a gateway's Fallback* guards
	// Budget, when set, bounds what one request waits for Primary in all
	// (the wrong-key lockout asks up to twice, then the caller's rate
	// limit): a Redis slow but within each call's timeout, which the
	// breaker never opens for, would otherwise cost a request that timeout
	// per call. Past it, the request's calls go to Secondary at once.
	Budget time.Duration
	// Instances is how many gateway instances share Primary (0 or 1: one).
	// While Primary cannot decide, every instance decides alone: a
	// caller's limit then holds per instance, which is enough, but a
	// Global limit would let Instances times its quota through, so each
	// instance allows only its share (Limit.share).
	Instances int
}

// Allow implements Limiter.
func (f FallbackLimiter) Allow(ctx context.Context, key string, limit Limit) (Decision, error) {
	return f.decide(ctx, limit, func(ctx context.Context, l Limiter, limit Limit) (Decision, error) {
		return l.Allow(ctx, key, limit)
	})
}

// Peek implements Limiter.
func (f FallbackLimiter) Peek(ctx context.Context, key string, limit Limit) (Decision, error) {
	return f.decide(ctx, limit, func(ctx context.Context, l Limiter, limit Limit) (Decision, error) {
		return l.Peek(ctx, key, limit)
	})
}

func (f FallbackLimiter) decide(ctx context.Context, limit Limit,
	call func(context.Context, Limiter, Limit) (Decision, error)) (Decision, error) {
	local := limit.share(f.Instances)
	rctx, done, ok := redisBudget(ctx, f.Budget)
	defer done()
	if !ok {
		countFallback("ratelimit", f.Hook)
		return call(ctx, f.Secondary, local)
	}
	// A call the budget cut short ends with rctx done: the breaker takes
	// it for its caller giving up, and stays closed.
	d, _, err := redisFirst(rctx, f.Breaker, f.Hook, "ratelimit",
		func() (Decision, error) { return call(rctx, f.Primary, limit) },
		func() (Decision, error) { return call(ctx, f.Secondary, local) })
	return d, err
}

// redisWait is how long a request has waited for Redis (see
// FallbackLimiter.Budget); every request's context carries one.
type redisWait struct{ spent atomic.Int64 } // nanoseconds

type redisWaitKey struct{}

// WithRedisWait gives ctx an account of its request's waits for Redis.
func WithRedisWait(ctx context.Context) context.Context {
	return context.WithValue(ctx, redisWaitKey{}, &redisWait{})
}

// redisBudget bounds ctx by what is left of its request's budget and
// returns done, which books the time the call took; ok is false when
// nothing is left. A context without an account (a job's) or a budget
// of 0 is not bounded.
func redisBudget(ctx context.Context, budget time.Duration) (_ context.Context, done func(), ok bool) {
	w, _ := ctx.Value(redisWaitKey{}).(*redisWait)
	if w == nil || budget <= 0 {
		return ctx, func() {}, true
	}
	left := budget - time.Duration(w.spent.Load())
	if left <= 0 {
		return ctx, func() {}, false
	}
	start := time.Now()
	bctx, cancel := context.WithTimeout(ctx, left)
	return bctx, func() { cancel(); w.spent.Add(int64(time.Since(start))) }, true
}
