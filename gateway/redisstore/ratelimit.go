package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
)

var _ gateway.Limiter = (*Store)(nil)

// gcraScript is GCRA on one key holding the theoretical arrival time (TAT)
// in microseconds of Redis's own clock, so instances with skewed clocks
// share one limit. ARGV: emission interval (µs), burst, 1 to count an
// allowed request (0: only answer whether one would be allowed), and how
// long (ms) KEYS[2], the call's own token key, outlives a counted call.
// Returns {allowed, retry_after_µs}.
//
// The token key makes the count survive go-redis's own retry: when a
// reply is late the client sends the script again, and the retry finds
// the token its first run left instead of counting the request twice.
var gcraScript = redis.NewScript(`
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return {1, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nexttat = tat + interval
local allowat = nexttat - burst * interval
if now < allowat then
  return {0, allowat - now}
end
if ARGV[3] ~= '1' then
  return {1, 0}
end
redis.call('SET', KEYS[1], string.format('%d', nexttat), 'PX', math.ceil((nexttat - now) / 1000) + 1)
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return {1, 0}
`)

// Allow implements gateway.Limiter with GCRA in one Lua script.
func (s *Store) Allow(ctx context.Context, key string, limit gateway.Limit) (gateway.Decision, error) {
	return s.gcra(ctx, key, limit, 1)
}

// Peek implements gateway.Limiter: the same script, counting nothing.
func (s *Store) Peek(ctx context.Context, key string, limit gateway.Limit) (gateway.Decision, error) {
	return s.gcra(ctx, key, limit, 0)
}

func (s *Store) gcra(ctx context.Context, key string, limit gateway.Limit, count int) (d gateway.Decision, err error) {
	if limit.PerMinute <= 0 {
		return gateway.Decision{Allowed: true}, nil
	}
	defer s.observe("ratelimit", time.Now(), &err)
	ctx, cancel := context.WithTimeout(ctx, s.opTime)
	defer cancel()
	interval := (time.Minute / time.Duration(limit.PerMinute)).Microseconds()
	burst := max(limit.Burst, 1)
	keys := []string{s.prefix + key, s.prefix + "rl-call:" + gateway.NewToken()}
	res, err := gcraScript.Run(ctx, s.client, keys, interval, burst, count, s.callTTL().Milliseconds()).Int64Slice()
	if err != nil {
		return gateway.Decision{}, fmt.Errorf("redis rate limit: %w", err)
	}
	if len(res) != 2 {
		return gateway.Decision{}, fmt.Errorf("redis rate limit: unexpected reply %v", res)
	}
	return gateway.Decision{Allowed: res[0] == 1, RetryAfter: time.Duration(res[1]) * time.Microsecond}, nil
}

// callTTL is how long a counted call's token key lives: past every retry
// of the call, which all happen within its op timeout.
func (s *Store) callTTL() time.Duration { return max(2*s.opTime, time.Second) }
