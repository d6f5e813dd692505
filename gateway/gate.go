package gateway

import (
	"context"
	"time"
)

// GateKeys names what one notification touches in the gate.
type GateKeys struct {
	Nonce    string // the signature's nonce (replay check)
	NotifyID string // the notification's id (committed mark)
	Lock     string // the advisory lock, e.g. "notify:<id>"
}

// GateTTLs says how long the gate remembers each thing.
type GateTTLs struct {
	Nonce time.Duration // above the ±5 min signature window
	Lock  time.Duration // above the slowest processing
	Done  time.Duration // above WeChat Pay's 24 h of redeliveries
}

// Admission is the gate's answer for one notification.
type Admission struct {
	Replay bool // the nonce was used before: refuse the request
	Done   bool // the notification is marked committed
	// Local: the mark is this process's memory of a commit it saw in its
	// own database. Redis's mark is only a hint (another deployment
	// sharing the prefix, or a database that lost its last commits since,
	// would have WeChat Pay answered 2xx for nothing recorded): the
	// processor confirms it in the ledger.
	Local bool
	Token string // the order lock's token; "" when another request holds it
}

// Gate guards notifications with one round trip before the database
// and one after: Admit records the nonce, tells whether the notification
// is already committed and takes an advisory lock; Finish
// releases the lock and, after a commit, marks the notification done.
// Everything it says only saves work: the database's unique keys decide,
// and a committed mark not this process's own is checked in the ledger.
type Gate interface {
	Admit(ctx context.Context, k GateKeys, t GateTTLs) (Admission, error)
	Finish(ctx context.Context, k GateKeys, token string, committed bool, t GateTTLs) error
}

// MemoryGate is the in-process Gate: for a single instance without Redis,
// and the fallback when Redis fails. It shares its locks with the
// in-process Locker so that waiting on a held lock works through either.
type MemoryGate struct {
	nonces *MemoryNonces
	done   *MemoryNonces
	locks  *MemoryLocker
}

// NewMemoryGate remembers at most max nonces and max committed ids.
func NewMemoryGate(max int, locks *MemoryLocker) *MemoryGate {
	return &MemoryGate{nonces: NewMemoryNonces(max), done: NewMemoryNonces(max), locks: locks}
}

// Entries is how many nonces and committed notification ids m holds.
func (m *MemoryGate) Entries() (nonces, committed int) { return m.nonces.Len(), m.done.Len() }

// Admit implements Gate.
func (m *MemoryGate) Admit(ctx context.Context, k GateKeys, t GateTTLs) (Admission, error) {
	if fresh, _ := m.nonces.FirstSeen(ctx, k.Nonce, t.Nonce); !fresh {
		return Admission{Replay: true}, nil
	}
	if m.done.Has(k.NotifyID) {
		return Admission{Done: true, Local: true}, nil
	}
	token, ok, _ := m.locks.TryLock(ctx, k.Lock, t.Lock)
	if !ok {
		token = ""
	}
	return Admission{Token: token}, nil
}

// Finish implements Gate.
func (m *MemoryGate) Finish(ctx context.Context, k GateKeys, token string, committed bool, t GateTTLs) error {
	if committed {
		_, _ = m.done.FirstSeen(ctx, k.NotifyID, t.Done)
	}
	if token != "" {
		return m.locks.Unlock(ctx, k.Lock, token)
	}
	return nil
}

// FallbackGate asks Primary (Redis) and, when it fails, Secondary
// (memory): Redis being down must never stop notifications. Tokens say
// which one holds a lock.
type FallbackGate struct {
	Primary, Secondary Gate
	Hook               func(what string) // told about each fallback (metrics)
	Breaker            *Breaker          // shared by a gateway's Fallback* guards
}

// Admit implements Gate. A nonce Redis admits is remembered in memory
// too, so that while Redis fails (or the breaker keeps calls off it) the
// memory gate still refuses a replay of what this instance saw before. A
// notification this instance committed is answered from memory without
// Redis: committed is final, and a replay of it changes nothing either.
func (f FallbackGate) Admit(ctx context.Context, k GateKeys, t GateTTLs) (Admission, error) {
	m, _ := f.Secondary.(*MemoryGate)
	if m != nil && m.done.Has(k.NotifyID) {
		if fresh, _ := m.nonces.FirstSeen(ctx, k.Nonce, t.Nonce); !fresh {
			return Admission{Replay: true}, nil
		}
		return Admission{Done: true, Local: true}, nil
	}
	a, fromRedis, err := redisFirst(ctx, f.Breaker, f.Hook, "gate",
		func() (Admission, error) { return f.Primary.Admit(ctx, k, t) },
		func() (Admission, error) { return f.Secondary.Admit(ctx, k, t) })
	if m != nil && fromRedis && err == nil && !a.Replay {
		_, _ = m.nonces.FirstSeen(ctx, k.Nonce, t.Nonce)
	}
	if !fromRedis && a.Token != "" {
		a.Token = "mem:" + a.Token
	}
	return a, err
}

// Finish implements Gate. A commit is remembered in memory too (see Admit).
func (f FallbackGate) Finish(ctx context.Context, k GateKeys, token string, committed bool, t GateTTLs) error {
	if m, ok := f.Secondary.(*MemoryGate); ok && committed {
		_, _ = m.done.FirstSeen(ctx, k.NotifyID, t.Done)
	}
	if mt, ok := cutPrefix(token, "mem:"); ok {
		return f.Secondary.Finish(ctx, k, mt, committed, t)
	}
	// A Finish queued for the next round trip never makes the request
	// wait, so when it releases a lock it goes whatever the breaker says
	// (the lock would otherwise hold redeliveries to other instances off
	// for its TTL), and its "success" says nothing about Redis. One that
	// only marks a notification done (a delivery that waited for another's
	// lock: token "") is an optimisation, and is dropped while the breaker
	// is open.
	if d, ok := f.Primary.(interface{ FinishQueued() bool }); ok && d.FinishQueued() {
		if token == "" && f.Breaker.Open() {
			return nil
		}
		return f.Primary.Finish(ctx, k, token, committed, t)
	}
	// Nothing to fall back to: an unwritten mark costs a later redelivery
	// a database lookup, an unreleased lock expires with its TTL. One that
	// releases a lock goes to Redis as an unlock does (see redisRelease).
	finish := func() error { return f.Primary.Finish(ctx, k, token, committed, t) }
	if token == "" {
		return redisOnly(ctx, f.Breaker, "finish", finish)
	}
	return redisRelease(ctx, f.Breaker, "finish", finish)
}
