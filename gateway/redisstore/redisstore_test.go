package redisstore_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

var ttls = gateway.GateTTLs{Nonce: time.Minute, Lock: time.Second, Done: time.Minute}

// TestAdmitOncePerNonce fires 50 concurrent admissions with one nonce:
// exactly one gets through, the rest are replays.
func TestAdmitOncePerNonce(t *testing.T) {
	s := redistest.Store(t)
	ctx := context.Background()
	var fresh atomic.Int32
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			k := gateway.GateKeys{Nonce: "n1", NotifyID: "id1", Lock: fmt.Sprintf("pay:%d", i)}
			a, err := s.Admit(ctx, k, ttls)
			if err != nil {
				t.Error(err)
			}
			if !a.Replay {
				fresh.Add(1)
			}
		})
	}
	wg.Wait()
	if fresh.Load() != 1 {
		t.Fatalf("fresh = %d, want 1", fresh.Load())
	}
}

// TestGateLockAndDoneMark walks one notification through the gate: the
// first delivery takes the lock, a redelivery meanwhile finds it busy,
// an uncommitted finish marks nothing, a committed one marks it done and
// frees the lock, and later deliveries are answered "done".
func TestGateLockAndDoneMark(t *testing.T) {
	g := redistest.Store(t)
	ctx := context.Background()
	k := func(nonce string) gateway.GateKeys {
		return gateway.GateKeys{Nonce: nonce, NotifyID: "id-" + t.Name(), Lock: "pay:" + t.Name()}
	}
	first, err := g.Admit(ctx, k("a"), ttls)
	if err != nil || first.Token == "" || first.Done || first.Replay {
		t.Fatalf("first admit: %+v %v", first, err)
	}
	if busy, _ := g.Admit(ctx, k("b"), ttls); busy.Token != "" || busy.Done || busy.Replay {
		t.Fatalf("second admit while held: %+v, want busy", busy)
	}
	if err := g.Finish(ctx, k("a"), "not-the-token", true, ttls); err != nil {
		t.Fatal(err)
	}
	if again, _ := g.Admit(ctx, k("c"), ttls); !again.Done {
		t.Fatalf("after a committed finish: %+v, want done", again)
	}
	if _, ok, _ := g.TryLock(ctx, "pay:"+t.Name(), time.Second); ok {
		t.Fatal("a stranger's token released the lock")
	}
	if err := g.Finish(ctx, k("a"), first.Token, false, ttls); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := g.TryLock(ctx, "pay:"+t.Name(), time.Second); !ok {
		t.Fatal("the owner's finish did not release the lock")
	}
}

// TestGateUncommittedFinishMarksNothing: a failed apply must leave the
// notification to be processed again.
func TestGateUncommittedFinishMarksNothing(t *testing.T) {
	g := redistest.Store(t)
	ctx := context.Background()
	k := gateway.GateKeys{Nonce: "x1", NotifyID: "id-" + t.Name(), Lock: "pay:" + t.Name()}
	a, _ := g.Admit(ctx, k, ttls)
	if err := g.Finish(ctx, k, a.Token, false, ttls); err != nil {
		t.Fatal(err)
	}
	k.Nonce = "x2"
	if again, _ := g.Admit(ctx, k, ttls); again.Done || again.Token == "" {
		t.Fatalf("after a failed apply: %+v, want fresh and locked", again)
	}
}

func TestLockOnlyOwnerReleases(t *testing.T) {
	s := redistest.Store(t)
	ctx := context.Background()
	tok, ok, err := s.TryLock(ctx, "k", time.Second)
	if err != nil || !ok {
		t.Fatalf("first lock: ok=%v err=%v", ok, err)
	}
	if _, ok, _ := s.TryLock(ctx, "k", time.Second); ok {
		t.Fatal("second lock succeeded while held")
	}
	if err := s.Unlock(ctx, "k", "not-the-token"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TryLock(ctx, "k", time.Second); ok {
		t.Fatal("a stranger's unlock released the lock")
	}
	if err := s.Unlock(ctx, "k", tok); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TryLock(ctx, "k", time.Second); !ok {
		t.Fatal("lock not free after owner's unlock")
	}
}

// countCommands counts the commands a client sends one at a time.
type countCommands struct{ cmds atomic.Int64 }

func (h *countCommands) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countCommands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countCommands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestHeldLockIsOneRoundTrip: asking for a lock someone holds costs one
// round trip, as taking a free one does, so both fit one op timeout
// whenever Redis answers within it.
func TestHeldLockIsOneRoundTrip(t *testing.T) {
	s := redistest.Store(t)
	ctx := context.Background()
	if _, ok, err := s.TryLock(ctx, "held", time.Minute); err != nil || !ok {
		t.Fatalf("first lock: ok=%v err=%v", ok, err)
	}
	hook := &countCommands{}
	s.Client().AddHook(hook)
	if _, ok, err := s.TryLock(ctx, "held", time.Minute); err != nil || ok {
		t.Fatalf("second lock: ok=%v err=%v, want refused", ok, err)
	}
	if n := hook.cmds.Load(); n != 1 {
		t.Fatalf("a held lock took %d round trips, want 1", n)
	}
}

// TestDeadRedisFailsFastAndFallsBack points the store at a port that
// accepts connections but never answers (a hung Redis) and checks that
// each call gives up within the configured bound and the fallback works.
func TestDeadRedisFailsFastAndFallsBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	cfg := redisstore.Config{Addr: ln.Addr().String(), OpTimeout: 150 * time.Millisecond}
	s := redisstore.New(redisstore.NewClient(cfg), cfg)
	defer s.Close()
	gate := gateway.FallbackGate{Primary: s, Secondary: gateway.NewMemoryGate(10, gateway.NewMemoryLocker())}
	k := gateway.GateKeys{Nonce: "n", NotifyID: "id", Lock: "pay:1"}
	start := time.Now()
	a, err := gate.Admit(context.Background(), k, ttls)
	if err != nil || a.Replay || !strings.HasPrefix(a.Token, "mem:") {
		t.Fatalf("fallback: %+v err=%v", a, err)
	}
	if err := gate.Finish(context.Background(), k, a.Token, true, ttls); err != nil {
		t.Fatal(err)
	}
	if again, _ := gate.Admit(context.Background(), k, ttls); !again.Replay {
		t.Fatalf("fallback cache forgot the nonce: %+v", again)
	}
	k.Nonce = "n2"
	if again, _ := gate.Admit(context.Background(), k, ttls); !again.Done {
		t.Fatalf("fallback forgot the committed notification: %+v", again)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("two calls to a hung redis took %v", took)
	}
}

// countPipelines counts the pipelines a client sends and the commands in them.
type countPipelines struct{ pipelines, cmds atomic.Int64 }

func (h *countPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *countPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *countPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestConcurrentAdmitsShareRoundTrips: 200 notifications admitted at once
// are each answered correctly, in fewer round trips than calls.
func TestConcurrentAdmitsShareRoundTrips(t *testing.T) {
	s := redistest.Store(t)
	hook := &countPipelines{}
	s.Client().AddHook(hook)
	ctx := context.Background()
	var fresh atomic.Int32
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			k := gateway.GateKeys{Nonce: fmt.Sprintf("pn-%d", i), NotifyID: fmt.Sprintf("pid-%d", i), Lock: fmt.Sprintf("pay:p%d", i)}
			if a, err := s.Admit(ctx, k, ttls); err == nil && !a.Replay && !a.Done && a.Token != "" {
				fresh.Add(1)
			} else {
				t.Errorf("admit %d: %+v %v", i, a, err)
			}
		})
	}
	wg.Wait()
	// (connection set-up also runs as small pipelines, hence "at least")
	if fresh.Load() != 200 || hook.cmds.Load() < 200 || hook.pipelines.Load() >= 100 {
		t.Fatalf("fresh=%d, %d commands in %d round trips; want 200 fresh in far fewer round trips",
			fresh.Load(), hook.cmds.Load(), hook.pipelines.Load())
	}
}

// TestAdmitAfterScriptFlush: Redis forgot the scripts (a restart or a
// SCRIPT FLUSH); the gate loads them again instead of failing.
func TestAdmitAfterScriptFlush(t *testing.T) {
	s := redistest.Store(t)
	ctx := context.Background()
	k := gateway.GateKeys{Nonce: "sf1", NotifyID: "sf-id", Lock: "pay:sf"}
	if _, err := s.Admit(ctx, k, ttls); err != nil {
		t.Fatal(err)
	}
	if err := s.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	k.Nonce = "sf2"
	if a, err := s.Admit(ctx, k, ttls); err != nil || a.Token != "" || a.Replay {
		t.Fatalf("after SCRIPT FLUSH: %+v %v, want busy (the first admit holds the lock)", a, err)
	}
}
