package gateway

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Locker takes short advisory locks. Locks only save duplicate work: the
// database's unique keys and row locks are the guarantee.
type Locker interface {
	TryLock(ctx context.Context, key string, ttl time.Duration) (token string, ok bool, err error)
	Unlock(ctx context.Context, key, token string) error
}

// MemoryNonces is a bounded in-process nonce cache: the oldest entries go
// first when it is full.
type MemoryNonces struct {
	mu    sync.Mutex
	max   int
	order *list.List
	seen  map[string]*list.Element
	now   func() time.Time
}

type nonceEntry struct {
	nonce   string
	expires time.Time
}

// NewMemoryNonces returns a cache holding at most max nonces.
func NewMemoryNonces(max int) *MemoryNonces {
	return &MemoryNonces{max: max, order: list.New(), seen: map[string]*list.Element{}, now: time.Now}
}

// FirstSeen records nonce and reports whether it was new.
func (m *MemoryNonces) FirstSeen(_ context.Context, nonce string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.expire(now)
	if _, ok := m.seen[nonce]; ok {
		return false, nil
	}
	for m.order.Len() >= m.max {
		m.remove(m.order.Front())
	}
	m.seen[nonce] = m.order.PushBack(nonceEntry{nonce: nonce, expires: now.Add(ttl)})
	return true, nil
}

// Len is the number of entries held, expired ones dropped first.
func (m *MemoryNonces) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(m.now())
	return m.order.Len()
}

// Has reports whether key is remembered and not expired.
func (m *MemoryNonces) Has(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(m.now())
	_, ok := m.seen[key]
	return ok
}

func (m *MemoryNonces) expire(now time.Time) {
	for e := m.order.Front(); e != nil && e.Value.(nonceEntry).expires.Before(now); e = m.order.Front() {
		m.remove(e)
	}
}

func (m *MemoryNonces) remove(e *list.Element) {
	delete(m.seen, e.Value.(nonceEntry).nonce)
	m.order.Remove(e)
}

// MemoryLocker is the in-process Locker used when no Redis is configured
// (and when Redis fails). A lock its holder never released (it died) is
// dropped once expired: TryLock sweeps the map when it has doubled since
// the last sweep, a cost of O(1) for each lock taken in between.
type MemoryLocker struct {
	mu      sync.Mutex
	locks   map[string]memLock
	sweepAt int // the map's size at which TryLock next drops expired locks
}

// memLockSweepMin is the least size at which MemoryLocker sweeps.
const memLockSweepMin = 64

type memLock struct {
	token   string
	expires time.Time
}

// NewMemoryLocker returns an empty in-process locker.
func NewMemoryLocker() *MemoryLocker {
	return &MemoryLocker{locks: map[string]memLock{}, sweepAt: memLockSweepMin}
}

// TryLock implements Locker.
func (m *MemoryLocker) TryLock(_ context.Context, key string, ttl time.Duration) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if l, ok := m.locks[key]; ok && l.expires.After(now) {
		return "", false, nil
	}
	if len(m.locks) >= m.sweepAt {
		m.sweep(now)
	}
	token := NewToken()
	m.locks[key] = memLock{token: token, expires: now.Add(ttl)}
	return token, true, nil
}

// sweep drops the expired locks. A stale token's Unlock then finds no
// lock, or a newer holder's token, and releases nothing.
func (m *MemoryLocker) sweep(now time.Time) {
	for key, l := range m.locks {
		if !l.expires.After(now) {
			delete(m.locks, key)
		}
	}
	m.sweepAt = max(2*len(m.locks), memLockSweepMin)
}

// Unlock implements Locker; only the owner's token releases the lock.
func (m *MemoryLocker) Unlock(_ context.Context, key, token string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.locks[key]; ok && l.token == token {
		delete(m.locks, key)
	}
	return nil
}

// NewToken returns a random 128-bit hex token.
func NewToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Fallbacks counts how often a Redis-backed guard fell back to memory.
var Fallbacks atomic.Int64

// FallbackLocker takes locks in Primary (Redis) and, when it fails, in
// Secondary (memory). Tokens say which one holds a lock.
type FallbackLocker struct {
	Primary, Secondary Locker
	Hook               func(what string) // told about each fallback (metrics)
	Breaker            *Breaker          // shared by a gateway's Fallback* guards
}

// TryLock implements Locker.
func (f FallbackLocker) TryLock(ctx context.Context, key string, ttl time.Duration) (string, bool, error) {
	type held struct {
		token string
		ok    bool
	}
	try := func(l Locker) func() (held, error) {
		return func() (held, error) {
			token, ok, err := l.TryLock(ctx, key, ttl)
			return held{token, ok}, err
		}
	}
	h, fromRedis, err := redisFirst(ctx, f.Breaker, f.Hook, "lock", try(f.Primary), try(f.Secondary))
	if !fromRedis {
		h.token = "mem:" + h.token
	}
	return h.token, h.ok, err
}

// Unlock implements Locker. While the breaker is open a Redis lock is
// left to expire with its TTL; after the cool-down it is released even
// while another call probes Redis.
func (f FallbackLocker) Unlock(ctx context.Context, key, token string) error {
	if t, ok := cutPrefix(token, "mem:"); ok {
		return f.Secondary.Unlock(ctx, key, t)
	}
	return redisRelease(ctx, f.Breaker, "unlock", func() error { return f.Primary.Unlock(ctx, key, token) })
}

// FallbackHook, when set, is told about each fallback. It is process
// wide; prefer the Hook field of the Fallback* guards (one per gateway).
var FallbackHook func(what string)

// countFallback counts one use of the in-process guard instead of Redis.
func countFallback(what string, hook func(string)) {
	Fallbacks.Add(1)
	if FallbackHook != nil {
		FallbackHook(what)
	}
	if hook != nil {
		hook(what)
	}
}

// noteEnd records how a Redis call went: a failure opens the breaker and
// is logged once per opening (or every time without a breaker), so a
// Redis outage does not log once per request; a probe's success closes it.
func noteEnd(ctx context.Context, what string, err error, b *Breaker, probe bool) {
	opened := b.End(ctx, probe, err)
	if err != nil && (b == nil || opened) {
		slog.WarnContext(ctx, "redis unavailable, using in-process fallback", "what", what, "err", err,
			"skip_redis_for", b.cooldown())
	}
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return s, false
}

// lockWith takes an advisory lock, waiting up to wait for a holder to
// finish. It never fails the caller: if Redis is down or the wait runs
// out, the database's keys and row locks still make the write safe.
// Between tries it waits 5 ms, doubling up to 50 ms, so that a storm of
// redeliveries waiting on one holder does not flood Redis (each try of a
// held lock is a round trip).
func lockWith(ctx context.Context, l Locker, key string, ttl, wait time.Duration) func() {
	deadline := time.Now().Add(wait)
	pause := lockRetryFirst
	for {
		token, ok, err := l.TryLock(ctx, key, ttl)
		if ok && err == nil { // taken, even if the wait ran out meanwhile: give it back
			return func() { _ = l.Unlock(context.WithoutCancel(ctx), key, token) }
		}
		if err != nil || time.Now().After(deadline) || !sleepCtx(ctx, min(pause, time.Until(deadline)+time.Millisecond)) {
			return func() {}
		}
		pause = min(2*pause, lockRetryMax)
	}
}

// The waits between tries of a held lock.
const (
	lockRetryFirst = 5 * time.Millisecond
	lockRetryMax   = 50 * time.Millisecond
)
