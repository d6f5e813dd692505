package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway/internal/burst"
	"paygateway/gateway/inventory"
	"paygateway/gateway/inventory/inventorysim"
)

// env is a simulator behind a real loopback server and a client for it.
type env struct {
	sim    *inventorysim.Sim
	srv    *httptest.Server
	client *inventory.Client
}

func newEnv(t *testing.T, timeout time.Duration) *env {
	t.Helper()
	sim := inventorysim.New()
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return &env{sim: sim, srv: srv, client: inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: timeout})}
}

// op is one kind of write, so every scenario runs for confirmations and releases.
type op struct {
	name  string
	write func(ctx context.Context, c *inventory.Client, key string, amount int64) error
	done  func(c *inventory.Client, ctx context.Context, key string, amount int64) (bool, error)
	count func(s *inventorysim.Sim, outTradeNo string) int
}

// orderOf derives the order from the key so tests can check per-order counts.
func orderOf(key string) string { return "T-" + key }

var ops = []op{
	{
		name: "confirm",
		write: func(ctx context.Context, c *inventory.Client, key string, amount int64) error {
			return c.Confirm(ctx, inventory.Confirmation{Key: key, OutTradeNo: orderOf(key), AmountTotal: amount})
		},
		done: func(c *inventory.Client, ctx context.Context, key string, amount int64) (bool, error) {
			return c.ConfirmationDone(ctx, inventory.Confirmation{Key: key, OutTradeNo: orderOf(key), AmountTotal: amount})
		},
		count: (*inventorysim.Sim).ConfirmCount,
	},
	{
		name: "release",
		write: func(ctx context.Context, c *inventory.Client, key string, amount int64) error {
			return c.Release(ctx, inventory.Release{Key: key, OutRefundNo: "R-" + key, OutTradeNo: orderOf(key), Amount: amount})
		},
		done: func(c *inventory.Client, ctx context.Context, key string, amount int64) (bool, error) {
			return c.ReleaseDone(ctx, inventory.Release{Key: key, OutRefundNo: "R-" + key, OutTradeNo: orderOf(key), Amount: amount})
		},
		count: (*inventorysim.Sim).ReleaseCount,
	},
}

func TestWriteFaults(t *testing.T) {
	cases := []struct {
		name        string
		faults      inventorysim.Faults
		wantErr     func(error) bool // nil: want success
		wantApplied int
	}{
		{name: "no fault", wantApplied: 1},
		{name: "fail next", faults: inventorysim.Faults{FailNext: 1}, wantErr: inventory.IsUnknown},
		{name: "error rate 1", faults: inventorysim.Faults{ErrorRate: 1}, wantErr: inventory.IsUnknown},
		{name: "drop next", faults: inventorysim.Faults{DropNext: 1}, wantErr: inventory.IsUnknown},
		{name: "drop rate 1", faults: inventorysim.Faults{DropRate: 1}, wantErr: inventory.IsUnknown},
		{name: "apply then timeout", faults: inventorysim.Faults{ApplyThenTimeoutNext: 1},
			wantErr: inventory.IsUnknown, wantApplied: 1},
		{name: "apply then drop", faults: inventorysim.Faults{ApplyThenTimeoutNext: 1, ApplyThenDrop: true},
			wantErr: inventory.IsUnknown, wantApplied: 1},
		{name: "permanent next", faults: inventorysim.Faults{PermanentNext: 1}, wantErr: inventory.IsPermanent},
		{name: "latency beyond timeout", faults: inventorysim.Faults{Latency: 2 * time.Second},
			wantErr: inventory.IsUnknown},
		{name: "latency within timeout", faults: inventorysim.Faults{Latency: 20 * time.Millisecond}, wantApplied: 1},
	}
	for _, o := range ops {
		for _, tc := range cases {
			t.Run(o.name+"/"+tc.name, func(t *testing.T) {
				// A new server per case makes the faulted write open a fresh
				// connection: net/http replays a POST carrying Idempotency-Key
				// once if a reused keep-alive connection dies, which is safe
				// but would hide the drop this table wants to see.
				e := newEnv(t, time.Second) // a loaded machine must not time out a healthy call
				e.sim.SetFaults(tc.faults)
				ctx := context.Background()

				err := o.write(ctx, e.client, "k1", 1999)
				checkErr(t, err, tc.wantErr)
				done, err := o.done(e.client, ctx, "k1", 1999)
				if err != nil {
					t.Fatalf("done: %v", err)
				}
				if want := tc.wantApplied == 1; done != want {
					t.Fatalf("done=%v, want %v", done, want)
				}
				e.srv.Close() // waits for stalled handlers, so the counts below are final
				checkApplied(t, e.sim, o, "k1", tc.wantApplied)
			})
		}
	}
}

func checkErr(t *testing.T, err error, want func(error) bool) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("err=%v, want nil", err)
	case want != nil && (err == nil || !want(err)):
		t.Fatalf("err=%v, not of the wanted class", err)
	case inventory.IsUnknown(err) && inventory.IsPermanent(err):
		t.Fatalf("err=%v is both unknown and permanent", err)
	}
}

func checkApplied(t *testing.T, s *inventorysim.Sim, o op, key string, want int) {
	t.Helper()
	if got := s.AppliedByKey(key); got != want {
		t.Fatalf("AppliedByKey=%d, want %d", got, want)
	}
	if got := o.count(s, orderOf(key)); got != want {
		t.Fatalf("count for %s=%d, want %d", orderOf(key), got, want)
	}
}

func TestDoneUnknownKey(t *testing.T) {
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			e := newEnv(t, time.Second)
			done, err := o.done(e.client, context.Background(), "never-sent", 1)
			if err != nil || done {
				t.Fatalf("done=%v err=%v, want false, nil", done, err)
			}
		})
	}
}

func TestRepeatedKeyAppliedOnce(t *testing.T) {
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			e := newEnv(t, time.Second)
			for i := range 3 {
				if err := o.write(context.Background(), e.client, "k1", 500); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			checkApplied(t, e.sim, o, "k1", 1)
			if got := e.sim.Stats().Duplicates; got != 2 {
				t.Fatalf("duplicates=%d, want 2", got)
			}
		})
	}
}

func TestIdempotencyMismatch(t *testing.T) {
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			e := newEnv(t, time.Second)
			ctx := context.Background()
			if err := o.write(ctx, e.client, "k1", 500); err != nil {
				t.Fatalf("first write: %v", err)
			}
			err := o.write(ctx, e.client, "k1", 600)
			if !inventory.IsPermanent(err) || inventory.IsUnknown(err) ||
				!errors.Is(err, inventory.ErrIdempotencyMismatch) {
				t.Fatalf("err=%v, want permanent with ErrIdempotencyMismatch", err)
			}
			checkApplied(t, e.sim, o, "k1", 1)
		})
	}
}

func TestConcurrentWritesApplyOncePerKey(t *testing.T) {
	const writers, keys = 200, 20
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			e := newEnv(t, 5*time.Second)
			errs := make(chan error, writers)
			var wg sync.WaitGroup
			for i := range writers {
				wg.Go(func() { errs <- o.write(context.Background(), e.client, fmt.Sprintf("k%d", i%keys), 100) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			for i := range keys {
				checkApplied(t, e.sim, o, fmt.Sprintf("k%d", i), 1)
			}
			if st := e.sim.Stats(); st.Duplicates != writers-keys {
				t.Fatalf("duplicates=%d, want %d", st.Duplicates, writers-keys)
			}
		})
	}
}

// TestConcurrentChaos drives writes through every fault with the caller's
// protocol (unknown: query, then resend) and checks exactly once per key.
func TestConcurrentChaos(t *testing.T) {
	const writers, keys = 200, 20
	faults := inventorysim.Faults{ErrorRate: 0.2, DropRate: 0.1, ApplyThenTimeoutRate: 0.1,
		ApplyThenTimeoutDelay: time.Second, Only: inventorysim.OnlyAll}
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			e := newEnv(t, 150*time.Millisecond)
			e.sim.SetFaults(faults)
			var wg sync.WaitGroup
			for i := range writers {
				wg.Go(func() { writeUntilDone(t, e, o, fmt.Sprintf("k%d", i%keys)) })
			}
			wg.Wait()
			e.srv.Close()
			for i := range keys {
				checkApplied(t, e.sim, o, fmt.Sprintf("k%d", i), 1)
			}
			if e.sim.Stats().Faults == 0 {
				t.Fatalf("no fault injected")
			}
		})
	}
}

func writeUntilDone(t *testing.T, e *env, o op, key string) {
	ctx := context.Background()
	for range 100 {
		err := o.write(ctx, e.client, key, 100)
		if err == nil {
			return
		}
		if !inventory.IsUnknown(err) {
			t.Errorf("write %s: %v", key, err)
			return
		}
		if done, err := o.done(e.client, ctx, key, 100); err == nil && done {
			return
		}
	}
	t.Errorf("write %s: not done after 100 attempts", key)
}

// TestAnotherCallersRecordIsNotDone: the service holds a key for another
// order or amount (another caller); asking whether this request is done
// under that key is a permanent key mismatch, never "done": otherwise a
// confirmation that never happened would count as done and let the
// order's releases go ahead.
func TestAnotherCallersRecordIsNotDone(t *testing.T) {
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			e := newEnv(t, time.Second)
			ctx := context.Background()
			if err := o.write(ctx, e.client, "shared", 500); err != nil {
				t.Fatal(err)
			}
			done, err := o.done(e.client, ctx, "shared", 600)
			if done || !inventory.IsPermanent(err) || !errors.Is(err, inventory.ErrIdempotencyMismatch) {
				t.Fatalf("done=%v err=%v; want a permanent key mismatch", done, err)
			}
			if done, err := o.done(e.client, ctx, "shared", 500); err != nil || !done {
				t.Fatalf("own record: done=%v err=%v", done, err)
			}
		})
	}
}

// TestNoBlindResendOnAReusedConnection: a write whose kept-alive
// connection is closed after the request went out may have been applied.
// net/http would send a request carrying an Idempotency-Key again at once
// on a new connection; the client must instead report the outcome unknown,
// so that the next attempt asks the service first.
func TestNoBlindResendOnAReusedConnection(t *testing.T) {
	sim := inventorysim.New()
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && posts.Add(1) == 2 {
			sim.Handler().ServeHTTP(httptest.NewRecorder(), r) // applied, then the connection drops
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		sim.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: 2 * time.Second})
	ctx := context.Background()
	if err := c.Confirm(ctx, inventory.Confirmation{Key: "k1", OutTradeNo: "T1", AmountTotal: 100}); err != nil {
		t.Fatal(err)
	}
	err := c.Confirm(ctx, inventory.Confirmation{Key: "k2", OutTradeNo: "T2", AmountTotal: 100})
	if !inventory.IsUnknown(err) {
		t.Fatalf("write on a connection dropped after the request: %v, want an unknown outcome", err)
	}
	if n := posts.Load(); n != 2 {
		t.Fatalf("the service got %d POSTs, want 2 (no resend before a query)", n)
	}
}

// TestClientKeepsConnectionsForTheWorkers: after concurrent calls (the
// outbox workers') the client keeps its connections, so the next round
// opens none (the default transport keeps 2 per host).
func TestClientKeepsConnectionsForTheWorkers(t *testing.T) {
	const workers = 8
	srv := burst.Start(t, inventorysim.New().Handler(), workers)
	c := inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: 5 * time.Second})
	first, again := srv.Rounds(workers, func(i int) {
		cf := inventory.Confirmation{Key: fmt.Sprintf("keep-%d", i), OutTradeNo: orderOf("keep"), AmountTotal: 1}
		if _, err := c.ConfirmationDone(context.Background(), cf); err != nil {
			t.Errorf("ConfirmationDone: %v", err)
		}
	})
	if first != workers || again != 0 {
		t.Fatalf("first round opened %d connections (want %d), the second %d more (want 0)", first, workers, again)
	}
}
