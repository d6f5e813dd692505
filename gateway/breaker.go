package gateway

import (
	"context"
	"sync/atomic"
	"time"
)

// Breaker keeps the Fallback* guards off Redis for Cooldown after a Redis
// call fails. Each call is bounded on its own, but one request makes
// several (rate limit, gate or lock, lock retries, unlock): without the
// breaker a hung Redis cost a request one op timeout per call. With it a
// request waits for Redis at most once, and during the cool-down none
// does. The first call after the cool-down tries Redis again. A nil
// Breaker never opens.
type Breaker struct {
	Cooldown  time.Duration // default 2 s
	openUntil atomic.Int64  // unix nanoseconds
}

// Open reports whether Redis is to be skipped now.
func (b *Breaker) Open() bool {
	return b != nil && time.Now().UnixNano() < b.openUntil.Load()
}

// Fail records a failed Redis call made under ctx. A call cut short by
// its caller (ctx done) says nothing about Redis and opens nothing.
// It reports whether this call opened the breaker.
func (b *Breaker) Fail(ctx context.Context) bool {
	if b == nil || ctx.Err() != nil {
		return false
	}
	d := b.cooldown()
	was := b.openUntil.Load()
	until := time.Now().Add(d).UnixNano()
	return b.openUntil.CompareAndSwap(was, until) && was <= time.Now().UnixNano()
}

func (b *Breaker) cooldown() time.Duration {
	if b == nil {
		return 0
	}
	if b.Cooldown <= 0 {
		return 2 * time.Second
	}
	return b.Cooldown
}
