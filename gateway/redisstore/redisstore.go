// Package redisstore backs the gateway's guards with Redis: the
// notification gate (nonce, committed mark and lock in one Lua script,
// pipelined across requests) and advisory locks (SET NX PX with a random
// token, released by compare-and-delete so only the owner can release).
package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
)

var (
	_ gateway.Gate   = (*Store)(nil)
	_ gateway.Locker = (*Store)(nil)
)

// Config bounds every Redis call; a slow or dead Redis must never hold a
// request longer than these.
type Config struct {
	Addr     string // host:port, or a unix socket's /path
	Username string // ACL user (Redis 6+); empty: the default user
	Password string
	DB       int
	// TLS, when set, is spoken to Redis (a managed Redis may require it).
	TLS          *tls.Config
	Prefix       string        // key prefix, default "gw:"
	PoolSize     int           // default 20
	DialTimeout  time.Duration // default 200 ms
	ReadTimeout  time.Duration // default 100 ms
	WriteTimeout time.Duration // default 100 ms
	PoolTimeout  time.Duration // wait for a free connection; default 100 ms
	OpTimeout    time.Duration // whole call including retries; default 250 ms
	// Observe, when set, is told how long each call took (metrics).
	Observe func(op string, d time.Duration, err error)
	// FinishDelay, when positive, lets the gate's Finish (the committed
	// mark and the lock release, which no answer waits for) ride in the
	// next round trip of the pipeline instead of its own, waiting at most
	// this long. Zero: Finish is one round trip of its own, awaited.
	FinishDelay time.Duration
}

// Store is a Redis-backed Gate and Locker.
type Store struct {
	client *redis.Client
	pipe   *pipeline
	prefix string
	opTime time.Duration
	later  bool // Finish is queued, not awaited (Config.FinishDelay)
	obs    func(op string, d time.Duration, err error)
}

// The waits a zero (or negative) PoolTimeout and OpTimeout stand for.
const (
	defaultPoolTimeout = 100 * time.Millisecond
	defaultOpTimeout   = 250 * time.Millisecond
)

// Wait is the longest a call may wait for Redis under cfg: for a pooled
// connection, then for its answer (zero fields are their defaults).
func (cfg Config) Wait() time.Duration {
	return or(cfg.PoolTimeout, defaultPoolTimeout) + or(cfg.OpTimeout, defaultOpTimeout)
}

// NewClient returns a go-redis client with bounded pool and timeouts.
func NewClient(cfg Config) *redis.Client {
	network := "tcp"
	if strings.HasPrefix(cfg.Addr, "/") {
		network = "unix"
	}
	return redis.NewClient(&redis.Options{
		Network: network, Addr: cfg.Addr, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB, TLSConfig: cfg.TLS,
		PoolSize:     orInt(cfg.PoolSize, 20),
		DialTimeout:  or(cfg.DialTimeout, 200*time.Millisecond),
		ReadTimeout:  or(cfg.ReadTimeout, 100*time.Millisecond),
		WriteTimeout: or(cfg.WriteTimeout, 100*time.Millisecond),
		PoolTimeout:  or(cfg.PoolTimeout, defaultPoolTimeout),
		MaxRetries:   1,
		// One dial per attempt: go-redis would otherwise dial 5 times,
		// 100 ms apart, so a Redis that refuses (a bad certificate, a
		// closed port) would cost the whole op timeout, not one dial.
		DialerRetries: 1,
		// Without it go-redis ignores the context's deadline on the socket:
		// with it, a call ends at the sooner of that and its own timeouts.
		ContextTimeoutEnabled: true,
	})
}

// New wraps a client.
func New(client *redis.Client, cfg Config) *Store {
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "gw:"
	}
	opTime := or(cfg.OpTimeout, defaultOpTimeout)
	return &Store{client: client, prefix: prefix, opTime: opTime, obs: cfg.Observe, later: cfg.FinishDelay > 0,
		pipe: newPipeline(client, 1, 128, opTime, cfg.FinishDelay)}
}

// Close stops the store's pipeline workers, sends the finishes still
// queued and waits (at most the op timeout) for those already being sent;
// the client is the caller's, to close after.
func (s *Store) Close() error {
	s.pipe.close()
	return nil
}

// observe reports the duration of a call that started at start; use as
// defer s.observe(op, time.Now(), &err).
func (s *Store) observe(op string, start time.Time, err *error) {
	if s.obs != nil {
		s.obs(op, time.Since(start), *err)
	}
}

// Client returns the underlying client (rate limiting shares it).
func (s *Store) Client() *redis.Client { return s.client }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.prefix }

// OpTimeout returns the bound of one Redis call.
func (s *Store) OpTimeout() time.Duration { return s.opTime }

// claimLua is SET NX that survives go-redis's own retry: when a reply is
// late the client sends the script again, and the retry finds the key its
// first try set. The value is a per-call token, so reading it back tells
// "someone else holds it" from "our earlier attempt took it".
const claimLua = `
local function claim(key, token, ttl)
  if redis.call("SET", key, token, "NX", "PX", ttl) then return true end
  return redis.call("GET", key) == token
end
`

// lockScript takes a lock in one round trip, held or free: two (SET NX,
// then GET) could each answer in time and still run out the call's op
// timeout together.
var lockScript = redis.NewScript(claimLua + `
if claim(KEYS[1], ARGV[1], ARGV[2]) then return 1 end
return 0`)

// TryLock implements gateway.Locker.
func (s *Store) TryLock(ctx context.Context, key string, ttl time.Duration) (_ string, _ bool, err error) {
	defer s.observe("lock", time.Now(), &err)
	ctx, cancel := context.WithTimeout(ctx, s.opTime)
	defer cancel()
	token := gateway.NewToken()
	n, err := lockScript.Run(ctx, s.client, []string{s.prefix + "lock:" + key}, token, max(ttl.Milliseconds(), 1)).Int()
	ok := n == 1
	if err != nil {
		// The SET may have run with its answer lost: the caller falls
		// back to memory, so a lock taken under token would hold off
		// every other instance for the whole TTL. Release it (only if
		// token still holds it) in the next round trip.
		s.pipe.runLater(unlockScript, []string{s.prefix + "lock:" + key}, func(error) {}, token)
		return "", false, fmt.Errorf("redis lock %s: %w", key, err)
	}
	return token, ok, nil
}

var unlockScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// Unlock implements gateway.Locker: it deletes the lock only if token
// still owns it, so a lock that expired and was retaken stays held.
func (s *Store) Unlock(ctx context.Context, key, token string) (err error) {
	defer s.observe("unlock", time.Now(), &err)
	ctx, cancel := context.WithTimeout(ctx, s.opTime)
	defer cancel()
	err = unlockScript.Run(ctx, s.client, []string{s.prefix + "lock:" + key}, token).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis unlock %s: %w", key, err)
	}
	return nil
}

// admitScript is the gate's first round trip. SET NX with a per-call
// token, read back on a clash, survives go-redis re-sending the script
// after a late reply (the retry finds its own token, not a replay).
var admitScript = redis.NewScript(claimLua + `
if not claim(KEYS[1], ARGV[1], ARGV[2]) then return "replay" end
if redis.call("EXISTS", KEYS[2]) == 1 then return "done" end
if claim(KEYS[3], ARGV[1], ARGV[3]) then return "locked" end
return "busy"`)

// finishScript marks a committed notification done and releases the
// lock if token still owns it.
var finishScript = redis.NewScript(`
if ARGV[3] == "1" then redis.call("SET", KEYS[2], "1", "PX", ARGV[2]) end
if ARGV[1] ~= "" and redis.call("GET", KEYS[1]) == ARGV[1] then redis.call("DEL", KEYS[1]) end
return 1`)

// Admit implements gateway.Gate in one round trip.
func (s *Store) Admit(ctx context.Context, k gateway.GateKeys, t gateway.GateTTLs) (_ gateway.Admission, err error) {
	defer s.observe("admit", time.Now(), &err)
	ctx, cancel := context.WithTimeout(ctx, s.opTime)
	defer cancel()
	token := gateway.NewToken()
	keys := []string{s.prefix + k.Nonce, s.prefix + "done:" + k.NotifyID, s.prefix + "lock:" + k.Lock}
	// The script may run with its answer lost (a timeout, the caller gone):
	// the caller then falls back to memory, so a lock taken under token
	// would be held for nobody and hold off a redelivery to another
	// instance for the whole lock TTL. The pipeline then queues its
	// release (token-guarded, nothing marked) after every try of the call.
	release := func() {
		s.pipe.runLater(finishScript, []string{keys[2], keys[1]}, func(error) {}, token, t.Done.Milliseconds(), "0")
	}
	res, err := s.pipe.runUndo(ctx, admitScript, keys, release, token, t.Nonce.Milliseconds(), t.Lock.Milliseconds()).Text()
	if err != nil {
		return gateway.Admission{}, fmt.Errorf("redis admit %s: %w", k.NotifyID, err)
	}
	switch res {
	case "replay":
		return gateway.Admission{Replay: true}, nil
	case "done":
		return gateway.Admission{Done: true}, nil
	case "locked":
		return gateway.Admission{Token: token}, nil
	}
	return gateway.Admission{}, nil
}

// FinishQueued reports whether Finish is queued for the next round trip
// (Config.FinishDelay) rather than awaited.
func (s *Store) FinishQueued() bool { return s.later }

// Finish implements gateway.Gate in one round trip, or, with
// Config.FinishDelay, queued for the next one: it then returns at once and
// a failure is only logged (an unwritten mark costs a later redelivery a
// database lookup; an unreleased lock expires with its TTL).
func (s *Store) Finish(ctx context.Context, k gateway.GateKeys, token string, committed bool, t gateway.GateTTLs) error {
	mark := "0"
	if committed {
		mark = "1"
	}
	keys := []string{s.prefix + "lock:" + k.Lock, s.prefix + "done:" + k.NotifyID}
	args := []any{token, t.Done.Milliseconds(), mark}
	start := time.Now()
	if s.later {
		s.pipe.runLater(finishScript, keys, func(err error) {
			s.observe("finish", start, &err)
			if err != nil {
				slog.WarnContext(ctx, "redis finish failed; the lock expires on its own", "notify_id", k.NotifyID, "err", err)
			}
		}, args...)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTime)
	defer cancel()
	err := s.pipe.run(ctx, finishScript, keys, args...).Err()
	s.observe("finish", start, &err)
	if err != nil {
		return fmt.Errorf("redis finish %s: %w", k.NotifyID, err)
	}
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orInt(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}
