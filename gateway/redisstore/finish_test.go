package redisstore_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

// laterStore is a store whose Finish is queued for up to delay.
func laterStore(t *testing.T, delay time.Duration) (*redisstore.Store, redisstore.Config) {
	cfg := redistest.Config(t)
	cfg.FinishDelay = delay
	c := redisstore.NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	return redisstore.New(c, cfg), cfg
}

// admitted takes the gate for a fresh notification named after the test.
func admitted(t *testing.T, s *redisstore.Store) (gateway.GateKeys, gateway.Admission) {
	t.Helper()
	k := gateway.GateKeys{Nonce: "n1", NotifyID: "id-" + t.Name(), Lock: "notify:" + t.Name()}
	a, err := s.Admit(context.Background(), k, ttls)
	if err != nil || a.Token == "" {
		t.Fatalf("admit: %+v %v", a, err)
	}
	return k, a
}

// TestQueuedFinishRidesWithTheNextAdmit: with a long FinishDelay the
// committed mark is still queued when a redelivery arrives, and it goes
// first in that redelivery's round trip, so the redelivery is answered
// "done", not "busy".
func TestQueuedFinishRidesWithTheNextAdmit(t *testing.T) {
	s, cfg := laterStore(t, 10*time.Second)
	defer s.Close()
	ctx := context.Background()
	k, a := admitted(t, s)
	if err := s.Finish(ctx, k, a.Token, true, ttls); err != nil {
		t.Fatal(err)
	}
	direct := redisstore.NewClient(cfg)
	defer direct.Close()
	if n, err := direct.Exists(ctx, cfg.Prefix+"done:"+k.NotifyID).Result(); err != nil || n != 0 {
		t.Fatalf("done mark in Redis right after Finish: %d, %v; want it still queued", n, err)
	}
	k.Nonce = "n2"
	if again, err := s.Admit(ctx, k, ttls); err != nil || !again.Done {
		t.Fatalf("redelivery after a queued committed finish: %+v %v, want done", again, err)
	}
	if _, ok, _ := s.TryLock(ctx, k.Lock, time.Second); !ok {
		t.Fatal("the lock was not released with the mark")
	}
}

// TestQueuedFinishGoesAfterTheDelay: with no other traffic the queued
// finish is sent on its own once the delay passes.
func TestQueuedFinishGoesAfterTheDelay(t *testing.T) {
	s, _ := laterStore(t, 20*time.Millisecond)
	defer s.Close()
	ctx := context.Background()
	// A lock held for a minute: only the finish frees it within the wait
	// below (with the 1 s of ttls it expired first, and a finish never
	// sent passed too).
	long := gateway.GateTTLs{Nonce: time.Minute, Lock: time.Minute, Done: time.Minute}
	k := gateway.GateKeys{Nonce: "n1", NotifyID: "id-" + t.Name(), Lock: "notify:" + t.Name()}
	a, err := s.Admit(ctx, k, long)
	if err != nil || a.Token == "" {
		t.Fatalf("admit: %+v %v", a, err)
	}
	if err := s.Finish(ctx, k, a.Token, false, long); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second) // a 20 ms timer and a round trip; room for a loaded machine
	for {
		if tok, ok, _ := s.TryLock(ctx, k.Lock, time.Second); ok {
			_ = s.Unlock(ctx, k.Lock, tok)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the queued unlock was never sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCloseSendsQueuedFinishes: finishes still queued at shutdown are
// sent by Close, so a restarted gateway finds the marks.
func TestCloseSendsQueuedFinishes(t *testing.T) {
	s, cfg := laterStore(t, time.Hour)
	ctx := context.Background()
	var keys []gateway.GateKeys
	for i := range 20 {
		k := gateway.GateKeys{Nonce: "n" + string(rune('a'+i)), NotifyID: "id-" + t.Name() + string(rune('a'+i)),
			Lock: "notify:" + t.Name() + string(rune('a'+i))}
		a, err := s.Admit(ctx, k, ttls)
		if err != nil || a.Token == "" {
			t.Fatalf("admit %d: %+v %v", i, a, err)
		}
		if err := s.Finish(ctx, k, a.Token, true, ttls); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	s.Close()
	cfg.FinishDelay = 0
	c := redisstore.NewClient(cfg)
	defer c.Close()
	fresh := redisstore.New(c, cfg)
	defer fresh.Close()
	for _, k := range keys {
		k.Nonce += "-again"
		if a, err := fresh.Admit(ctx, k, ttls); err != nil || !a.Done {
			t.Errorf("%s after Close: %+v %v, want done", k.NotifyID, a, err)
		}
	}
}

// TestQueuedFinishGoesWhileTheBreakerIsOpen: the breaker opened (for a
// reason of this instance's, Redis itself is fine) while a notification
// held its lock in Redis; the queued Finish still releases the lock and
// marks the notification done, and does not close the breaker.
func TestQueuedFinishGoesWhileTheBreakerIsOpen(t *testing.T) {
	s, cfg := laterStore(t, 2*time.Millisecond)
	b := &gateway.Breaker{Cooldown: time.Minute}
	g := gateway.FallbackGate{Primary: s, Secondary: gateway.NewMemoryGate(10, gateway.NewMemoryLocker()), Breaker: b}
	k := gateway.GateKeys{Nonce: "n-open", NotifyID: "id-" + t.Name(), Lock: "notify:" + t.Name()}
	a, err := g.Admit(context.Background(), k, ttls)
	if err != nil || a.Token == "" {
		t.Fatalf("admit: %+v %v", a, err)
	}
	b.Fail(context.Background())
	if err := g.Finish(context.Background(), k, a.Token, true, ttls); err != nil {
		t.Fatal(err)
	}
	direct := redisstore.NewClient(cfg)
	t.Cleanup(func() { direct.Close() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		locked, _ := direct.Exists(context.Background(), cfg.Prefix+"lock:"+k.Lock).Result()
		done, _ := direct.Exists(context.Background(), cfg.Prefix+"done:"+k.NotifyID).Result()
		if locked == 0 && done == 1 {
			if !b.Open() {
				t.Fatal("the queued Finish closed the breaker")
			}
			return
		}
	}
	t.Fatal("with the breaker open the lock stayed held and the notification unmarked")
}

// TestNonceSeenThroughRedisIsRefusedWhileItFails: a nonce Redis admitted
// is remembered in memory too, so a replay that arrives while the breaker
// keeps calls off Redis is still refused.
func TestNonceSeenThroughRedisIsRefusedWhileItFails(t *testing.T) {
	s, _ := laterStore(t, 0)
	b := &gateway.Breaker{Cooldown: time.Minute}
	g := gateway.FallbackGate{Primary: s, Secondary: gateway.NewMemoryGate(10, gateway.NewMemoryLocker()), Breaker: b}
	k := gateway.GateKeys{Nonce: "n-" + t.Name(), NotifyID: "id-" + t.Name(), Lock: "notify:" + t.Name()}
	a, err := g.Admit(context.Background(), k, ttls)
	if err != nil || a.Replay || a.Token == "" || strings.HasPrefix(a.Token, "mem:") {
		t.Fatalf("admit through Redis: %+v %v", a, err)
	}
	b.Fail(context.Background())
	k.NotifyID, k.Lock = k.NotifyID+"-other", k.Lock+"-other"
	if again, err := g.Admit(context.Background(), k, ttls); err != nil || !again.Replay {
		t.Fatalf("replay while Redis is off: %+v %v, want refused", again, err)
	}
}

// TestCommittedHereIsAnsweredWithoutRedis: a notification this instance
// committed is answered "done" from memory on its next delivery, without a
// round trip to Redis (Redis is closed here: a call would fail and count
// a fallback).
func TestCommittedHereIsAnsweredWithoutRedis(t *testing.T) {
	cfg := redistest.Config(t)
	c := redisstore.NewClient(cfg)
	s := redisstore.New(c, cfg)
	var fallbacks atomic.Int64
	g := gateway.FallbackGate{Primary: s, Secondary: gateway.NewMemoryGate(10, gateway.NewMemoryLocker()),
		Breaker: &gateway.Breaker{}, Hook: func(string) { fallbacks.Add(1) }}
	k := gateway.GateKeys{Nonce: "n-" + t.Name(), NotifyID: "id-" + t.Name(), Lock: "notify:" + t.Name()}
	a, err := g.Admit(context.Background(), k, ttls)
	if err != nil || a.Token == "" || strings.HasPrefix(a.Token, "mem:") {
		t.Fatalf("admit through Redis: %+v %v", a, err)
	}
	if err := g.Finish(context.Background(), k, a.Token, true, ttls); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c.Close()
	k.Nonce += "-again"
	if again, err := g.Admit(context.Background(), k, ttls); err != nil || !again.Done || fallbacks.Load() != 0 {
		t.Fatalf("redelivery: %+v %v after %d fallbacks; want done, from memory, Redis not asked", again, err, fallbacks.Load())
	}
}

// slowPipelines is a go-redis hook that tells started about a pipeline
// and holds it back for delay before sending it.
type slowPipelines struct {
	started chan struct{}
	delay   time.Duration
}

func (h slowPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h slowPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h slowPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		select {
		case h.started <- struct{}{}:
		default:
		}
		time.Sleep(h.delay)
		return next(ctx, cmds)
	}
}

// TestCloseWaitsForAFlushUnderWay: a queued finish whose delay ran out is
// being sent when Close is called. Close returns once that round trip is
// over, so the caller may close the client then and the mark still lands
// in Redis (it went out after Close, on the closed client, and was lost).
func TestCloseWaitsForAFlushUnderWay(t *testing.T) {
	cfg := redistest.Config(t)
	cfg.FinishDelay = time.Millisecond
	c := redisstore.NewClient(cfg)
	hook := slowPipelines{started: make(chan struct{}, 1), delay: 300 * time.Millisecond}
	c.AddHook(hook)
	s := redisstore.New(c, cfg)
	ctx := context.Background()
	k := gateway.GateKeys{Nonce: "n1", NotifyID: "id-" + t.Name(), Lock: "notify:" + t.Name()}
	if err := s.Finish(ctx, k, "", true, ttls); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hook.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the queued finish was never sent")
	}
	s.Close()
	c.Close()
	direct := redisstore.NewClient(cfg)
	defer direct.Close()
	if n, err := direct.Exists(ctx, cfg.Prefix+"done:"+k.NotifyID).Result(); err != nil || n != 1 {
		t.Fatalf("done mark after Close: %d, %v; want it in Redis", n, err)
	}
}
