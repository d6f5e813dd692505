package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway"
)

func TestBreaker(t *testing.T) {
	var none *gateway.Breaker
	if none.Fail(context.Background()) || none.Open() {
		t.Fatal("a nil breaker opened")
	}
	b := &gateway.Breaker{Cooldown: time.Second} // no pause of a loaded machine ends it before the checks
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if b.Fail(gone) || b.Open() {
		t.Fatal("a call its caller gave up on opened the breaker")
	}
	if !b.Fail(context.Background()) || !b.Open() {
		t.Fatal("a failed call did not open the breaker")
	}
	if b.Fail(context.Background()) {
		t.Fatal("a second failure reported opening an open breaker")
	}
	time.Sleep(1100 * time.Millisecond)
	if b.Open() {
		t.Fatal("the breaker stayed open past its cool-down")
	}
}

// TestBreakerProbesOneAtATime: after the cool-down a single call probes
// Redis while the others stay on the fallback; the probe's failure opens
// the breaker again, a probe its caller gave up on lets the next call
// probe, and a probe's success closes the breaker for everyone.
func TestBreakerProbesOneAtATime(t *testing.T) {
	ctx := context.Background()
	b := &gateway.Breaker{Cooldown: time.Second} // long enough that no pause of the test ends it early
	if ok, probe := b.Begin(); !ok || probe {
		t.Fatalf("closed breaker: Begin() = %v, %v; want a plain call", ok, probe)
	}
	b.End(ctx, false, errors.New("i/o timeout"))
	if ok, _ := b.Begin(); ok {
		t.Fatal("a call went to Redis during the cool-down")
	}
	time.Sleep(1100 * time.Millisecond)
	ok, probe := b.Begin()
	if !ok || !probe {
		t.Fatalf("after the cool-down: Begin() = %v, %v; want the probe", ok, probe)
	}
	if other, _ := b.Begin(); other {
		t.Fatal("a second call went to Redis while the probe was under way")
	}
	if !b.End(ctx, true, errors.New("i/o timeout")) || !b.Open() {
		t.Fatal("a failed probe did not open the breaker again")
	}
	time.Sleep(1100 * time.Millisecond)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, probe = b.Begin()
	b.End(gone, probe, context.Canceled)
	if ok, probe := b.Begin(); !ok || !probe {
		t.Fatalf("after a probe its caller gave up on: Begin() = %v, %v; want a new probe", ok, probe)
	}
	b.End(ctx, true, nil)
	for range 3 {
		if ok, probe := b.Begin(); !ok || probe {
			t.Fatalf("after a probe succeeded: Begin() = %v, %v; want plain calls", ok, probe)
		}
	}
}

// TestHungRedisAfterTheCoolDown: with Redis hung, of 50 requests that
// start once the cool-down is over only one (the probe) waits for Redis.
func TestHungRedisAfterTheCoolDown(t *testing.T) {
	hung := &hungGate{}
	g := gateway.FallbackGate{Primary: hung, Secondary: gateway.NewMemoryGate(1000, gateway.NewMemoryLocker()),
		Breaker: &gateway.Breaker{Cooldown: time.Second}} // outlasts the 50 admits, however slowly they run
	ttls := gateway.GateTTLs{Nonce: time.Minute, Lock: time.Second, Done: time.Minute}
	keys := func(i int) gateway.GateKeys {
		n := fmt.Sprint(i)
		return gateway.GateKeys{Nonce: "n" + n, NotifyID: "id" + n, Lock: "notify:id" + n}
	}
	if _, err := g.Admit(context.Background(), keys(0), ttls); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1050 * time.Millisecond)
	var wg sync.WaitGroup
	for i := 1; i <= 50; i++ {
		wg.Go(func() {
			if a, err := g.Admit(context.Background(), keys(i), ttls); err != nil || a.Token == "" {
				t.Errorf("admit %d: %+v, %v", i, a, err)
			}
		})
	}
	wg.Wait()
	if n := hung.calls.Load(); n != 2 {
		t.Fatalf("%d calls went to the hung Redis, want 2 (the one that opened the breaker, one probe)", n)
	}
}

// hungGate is a Redis gate that never answers: each call waits out its
// own 10 ms op timeout, as redisstore's calls do.
type hungGate struct{ calls atomic.Int64 }

func (h *hungGate) Admit(ctx context.Context, _ gateway.GateKeys, _ gateway.GateTTLs) (gateway.Admission, error) {
	h.calls.Add(1)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	<-ctx.Done()
	return gateway.Admission{}, ctx.Err()
}

func (h *hungGate) Finish(context.Context, gateway.GateKeys, string, bool, gateway.GateTTLs) error {
	return errors.New("hung")
}

// queuedGate is a Redis gate whose Finish is queued (never waits) and
// counts the finishes it is given.
type queuedGate struct {
	hungGate
	finishes atomic.Int64
}

func (q *queuedGate) FinishQueued() bool { return true }

func (q *queuedGate) Finish(context.Context, gateway.GateKeys, string, bool, gateway.GateTTLs) error {
	q.finishes.Add(1)
	return nil
}

// TestOpenBreakerDropsQueuedDoneMarksOnly: while the breaker keeps calls
// off a failing Redis, a queued Finish that releases a lock still goes
// (the lock would hold other instances off for its TTL), but one that only
// marks a notification done (a waiter's: no token) is dropped.
func TestOpenBreakerDropsQueuedDoneMarksOnly(t *testing.T) {
	q := &queuedGate{}
	b := &gateway.Breaker{Cooldown: time.Minute}
	g := gateway.FallbackGate{Primary: q, Secondary: gateway.NewMemoryGate(10, gateway.NewMemoryLocker()), Breaker: b}
	ttls := gateway.GateTTLs{Nonce: time.Minute, Lock: time.Second, Done: time.Minute}
	k := gateway.GateKeys{Nonce: "n1", NotifyID: "id1", Lock: "notify:id1"}
	if _, err := g.Admit(context.Background(), k, ttls); err != nil { // the hung admit opens the breaker
		t.Fatal(err)
	}
	if !b.Open() {
		t.Fatal("the breaker did not open on a hung admit")
	}
	_ = g.Finish(context.Background(), k, "", true, ttls)
	if n := q.finishes.Load(); n != 0 {
		t.Fatalf("a waiter's done mark went to Redis with the breaker open (%d finishes)", n)
	}
	_ = g.Finish(context.Background(), k, "redis-token", true, ttls)
	if n := q.finishes.Load(); n != 1 {
		t.Fatalf("a lock release did not go to Redis with the breaker open (%d finishes)", n)
	}
}

// panickyGate is a Redis gate whose calls panic while panics is set.
type panickyGate struct {
	panics atomic.Bool
	calls  atomic.Int32
}

func (g *panickyGate) Admit(context.Context, gateway.GateKeys, gateway.GateTTLs) (gateway.Admission, error) {
	g.calls.Add(1)
	if g.panics.Load() {
		panic("unexpected reply type")
	}
	return gateway.Admission{Token: "redis-token"}, nil
}

func (g *panickyGate) Finish(context.Context, gateway.GateKeys, string, bool, gateway.GateTTLs) error {
	return nil
}

// TestPanickingRedisCallFallsBack: a Redis call that panics (a reply of
// an unexpected shape) is answered by the fallback like a failed one, and
// opens the breaker; a panicking probe does not keep Redis off for good.
func TestPanickingRedisCallFallsBack(t *testing.T) {
	ctx := context.Background()
	redis := &panickyGate{}
	redis.panics.Store(true)
	b := &gateway.Breaker{Cooldown: time.Second}
	g := gateway.FallbackGate{Primary: redis, Secondary: gateway.NewMemoryGate(100, gateway.NewMemoryLocker()), Breaker: b}
	ttls := gateway.GateTTLs{Nonce: time.Minute, Lock: time.Minute, Done: time.Minute}
	admit := func(n int) gateway.Admission {
		keys := gateway.GateKeys{Nonce: fmt.Sprintf("n%d", n), NotifyID: fmt.Sprintf("id%d", n), Lock: fmt.Sprintf("lock%d", n)}
		a, err := g.Admit(ctx, keys, ttls)
		if err != nil {
			t.Fatalf("Admit %d: %v", n, err)
		}
		return a
	}
	if a := admit(1); a.Token == "" || a.Token == "redis-token" || !b.Open() {
		t.Fatalf("a panicking Redis call: admission %+v, breaker open %v; want the memory gate's lock and an open breaker", a, b.Open())
	}
	time.Sleep(1100 * time.Millisecond)
	admit(2) // the probe panics too
	redis.panics.Store(false)
	time.Sleep(1100 * time.Millisecond)
	if a := admit(3); a.Token != "redis-token" || b.Open() || redis.calls.Load() != 3 {
		t.Fatalf("after a panicking probe and the cool-down: admission %+v, breaker open %v, %d Redis calls; want Redis's answer", a, b.Open(), redis.calls.Load())
	}
}
