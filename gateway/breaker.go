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
// does; after it, calls try Redis again. It counts on the monotonic
// clock, so a step of the host's clock cannot hold it open. A nil
// Breaker never opens.
type Breaker struct {
	Cooldown  time.Duration // default 2 s
	openUntil atomic.Int64  // time since breakerEpoch, in nanoseconds
}

// breakerEpoch anchors the monotonic readings.
var breakerEpoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(breakerEpoch)) }

// Open reports whether Redis is to be skipped now.
func (b *Breaker) Open() bool {
	return b != nil && sinceEpoch() < b.openUntil.Load()
}

// Fail records a failed Redis call made under ctx. A call cut short by
// its caller (ctx done) says nothing about Redis and opens nothing.
// It reports whether this call opened the breaker.
func (b *Breaker) Fail(ctx context.Context) bool {
	if b == nil || ctx.Err() != nil {
		return false
	}
	now := sinceEpoch()
	was := b.openUntil.Load()
	return b.openUntil.CompareAndSwap(was, now+int64(b.cooldown())) && was <= now
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

// redisFirst asks primary (Redis) unless the breaker is open and, when it
// is open or primary fails, counts a fallback and asks secondary
// (memory). fromRedis says which one answered.
func redisFirst[T any](ctx context.Context, b *Breaker, hook func(string), what string,
	primary, secondary func() (T, error)) (v T, fromRedis bool, err error) {
	if !b.Open() {
		if v, err = primary(); err == nil {
			return v, true, nil
		}
		noteFailure(ctx, what, err, b)
	}
	countFallback(what, hook)
	v, err = secondary()
	return v, false, err
}

// redisOnly makes a Redis call that has no fallback (an unlock, a commit
// mark: losing one only costs time); it is skipped while the breaker is
// open.
func redisOnly(ctx context.Context, b *Breaker, what string, call func() error) error {
	if b.Open() {
		return nil
	}
	err := call()
	if err != nil {
		noteFailure(ctx, what, err, b)
	}
	return err
}
