package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Breaker keeps the Fallback* guards off Redis for Cooldown after a Redis
// call fails. Each call is bounded on its own, but one request makes
// several (rate limit, gate or lock, lock retries, unlock): without the
// breaker a hung Redis cost a request one op timeout per call. With it a
// request waits for Redis at most once, and during the cool-down none
// does. After the cool-down one call at a time probes Redis, the others
// staying on the fallback, until a probe succeeds and closes the breaker
// (or fails and opens it again): a Redis that still hangs costs one probe
// per cool-down, not every request that starts in the next op timeout.
// It counts on the monotonic clock, so a step of the host's clock cannot
// hold it open. A nil Breaker never opens.
type Breaker struct {
	Cooldown  time.Duration // default 2 s
	openUntil atomic.Int64  // time since breakerEpoch, in nanoseconds; 0 = closed
	probing   atomic.Bool   // a probe is under way
}

// breakerEpoch anchors the monotonic readings.
var breakerEpoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(breakerEpoch)) }

// Open reports whether Redis is to be skipped now, in the cool-down.
func (b *Breaker) Open() bool {
	return b != nil && sinceEpoch() < b.openUntil.Load()
}

// Begin reports whether a call may go to Redis now and whether it is the
// probe after a cool-down; a call begun must be ended with End.
func (b *Breaker) Begin() (allowed, probe bool) {
	if b == nil {
		return true, false
	}
	until := b.openUntil.Load()
	switch {
	case until == 0:
		return true, false
	case sinceEpoch() < until:
		return false, false
	case b.probing.CompareAndSwap(false, true):
		return true, true
	}
	return false, false
}

// BeginRelease is Begin for a call that gives back what it holds in Redis
// (an unlock): after the cool-down it goes to Redis even while another
// call probes, as a plain call (its success closes nothing). Skipping it
// would leave the lock held for its TTL, and such calls are few: only
// locks taken in Redis before the breaker opened are released there.
func (b *Breaker) BeginRelease() (allowed, probe bool) {
	if allowed, probe = b.Begin(); allowed || b.Open() {
		return allowed, probe
	}
	return true, false
}

// End records how a call begun with Begin went: a failure opens the
// breaker (see Fail), a probe's success closes it. It reports whether
// this call opened the breaker.
func (b *Breaker) End(ctx context.Context, probe bool, err error) (opened bool) {
	if b == nil {
		return false
	}
	if err != nil {
		opened = b.Fail(ctx)
	} else if probe {
		b.openUntil.Store(0)
	}
	if probe {
		b.probing.Store(false)
	}
	return opened
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

// redisFirst asks primary (Redis) unless the breaker keeps it off Redis
// and, when it does or primary fails, counts a fallback and asks
// secondary (memory). fromRedis says which one answered.
func redisFirst[T any](ctx context.Context, b *Breaker, hook func(string), what string,
	primary, secondary func() (T, error)) (v T, fromRedis bool, err error) {
	if allowed, probe := b.Begin(); allowed {
		v, err = guard(ctx, what, primary)
		noteEnd(ctx, what, err, b, probe)
		if err == nil {
			return v, true, nil
		}
	}
	countFallback(what, hook)
	v, err = secondary()
	return v, false, err
}

// redisOnly makes a Redis call that has no fallback (a commit mark:
// losing one only costs time); it is skipped while the breaker keeps
// calls off Redis.
func redisOnly(ctx context.Context, b *Breaker, what string, call func() error) error {
	return redisCall(ctx, b, b.Begin, what, call)
}

// redisRelease is redisOnly for an unlock: it goes to Redis unless the
// breaker is open (see Breaker.BeginRelease).
func redisRelease(ctx context.Context, b *Breaker, what string, call func() error) error {
	return redisCall(ctx, b, b.BeginRelease, what, call)
}

// redisCall makes call if begin lets it go to Redis and records how it
// went.
func redisCall(ctx context.Context, b *Breaker, begin func() (bool, bool), what string, call func() error) error {
	allowed, probe := begin()
	if !allowed {
		return nil
	}
	_, err := guard(ctx, what, func() (struct{}, error) { return struct{}{}, call() })
	noteEnd(ctx, what, err, b, probe)
	return err
}

// guard makes a Redis call, a panic in it becoming its error: the call
// then ends like any failure (the breaker opens, the fallback answers)
// instead of failing the request and leaving a probe under way for good,
// which would keep every later call off Redis.
func guard[T any](ctx context.Context, what string, call func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			slog.ErrorContext(ctx, "redis call panicked", "what", what, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("redis %s: panic: %v", what, p)
		}
	}()
	return call()
}
