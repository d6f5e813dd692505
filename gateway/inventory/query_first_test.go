package inventory_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway/inventory"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/retry"
)

// flakyInventory serves sim, except that it applies the first write to
// each path and answers it 502 (the answer lost), and answers every query
// 503 while queriesDown is set. It counts the writes sent to each path.
type flakyInventory struct {
	sim         *inventorysim.Sim
	queriesDown atomic.Bool
	mu          sync.Mutex
	writes      map[string]int
}

func (f *flakyInventory) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && f.queriesDown.Load() {
		http.Error(w, `{"code":"UNAVAILABLE"}`, http.StatusServiceUnavailable)
		return
	}
	if r.Method == http.MethodPost {
		f.mu.Lock()
		f.writes[r.URL.Path]++
		first := f.writes[r.URL.Path] == 1
		f.mu.Unlock()
		if first {
			f.sim.Handler().ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, `{"code":"INTERNAL"}`, http.StatusBadGateway)
			return
		}
	}
	f.sim.Handler().ServeHTTP(w, r)
}

func (f *flakyInventory) sent(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes[path]
}

// TestRetryAsksFirstEvenWhenTheQueryFails: a confirmation's and a
// release's first attempt took effect but the answer was lost (502). The
// next attempt's query fails (503): the outcome is still unknown, so
// nothing is sent, and the attempt is stored as unsent (it sent nothing
// that may take effect). The attempt after, with the query answered, is
// done without sending again. A query that finds the key held for another
// order (a key collision) dead-letters the confirmation: no number of
// retries makes it this order's.
func TestRetryAsksFirstEvenWhenTheQueryFails(t *testing.T) {
	sim := inventorysim.New()
	inv := &flakyInventory{sim: sim, writes: map[string]int{}}
	srv := httptest.NewServer(inv)
	defer srv.Close()
	jobs := &inventory.Jobs{Client: inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: time.Second})}
	ctx := context.Background()
	payload := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		kind, path, key string
		handle          func(context.Context, retry.Job) error
		payload         []byte
	}{
		{"confirmation", "/confirmations", "cf-qf-1", jobs.Confirm,
			payload(inventory.Confirmation{Key: "cf-qf-1", OutTradeNo: "T-qf-1", AmountTotal: 100})},
		{"release", "/releases", "rel-qf-1", jobs.Release,
			payload(inventory.Release{Key: "rel-qf-1", OutRefundNo: "R-qf-1", OutTradeNo: "T-qf-1", Amount: 100})},
	} {
		if err := tc.handle(ctx, retry.Job{ID: 1, Attempt: 1, Payload: tc.payload}); err == nil {
			t.Fatalf("%s, attempt 1, its answer lost: no error", tc.kind)
		}
		inv.queriesDown.Store(true)
		err := tc.handle(ctx, retry.Job{ID: 1, Attempt: 2, MaybeSent: true, Payload: tc.payload})
		if err == nil || retry.IsPermanent(err) || !retry.IsUnsent(err) || !inventory.IsUnknown(err) {
			t.Fatalf("%s, attempt 2, its query failing: err = %v (permanent %t, unsent %t); want an unknown outcome, "+
				"retried, stored unsent", tc.kind, err, retry.IsPermanent(err), retry.IsUnsent(err))
		}
		if n := inv.sent(tc.path); n != 1 {
			t.Fatalf("%s sent %d times after a failed query, want once: a resend blind", tc.kind, n)
		}
		inv.queriesDown.Store(false)
		if err := tc.handle(ctx, retry.Job{ID: 1, Attempt: 3, MaybeSent: true, Payload: tc.payload}); err != nil {
			t.Fatalf("%s, attempt 3: %v, want done (the inventory has it)", tc.kind, err)
		}
		if n, applied := inv.sent(tc.path), sim.AppliedByKey(tc.key); n != 1 || applied != 1 {
			t.Fatalf("%s sent %d times, applied %d; want 1, 1", tc.kind, n, applied)
		}
	}
	if blind := sim.ResentBlind(); len(blind) != 0 {
		t.Fatalf("resent without asking first: %v", blind)
	}

	// Another caller's confirmation under the key.
	other := httptest.NewRequest(http.MethodPost, "/confirmations",
		strings.NewReader(`{"key":"cf-qf-2","out_trade_no":"T-someone-else","amount_total":100}`))
	other.Header.Set("Content-Type", "application/json")
	other.Header.Set("Idempotency-Key", "cf-qf-2")
	held := httptest.NewRecorder()
	sim.Handler().ServeHTTP(held, other)
	if held.Code/100 != 2 {
		t.Fatalf("another caller's confirmation: %d %s", held.Code, held.Body)
	}
	mine := payload(inventory.Confirmation{Key: "cf-qf-2", OutTradeNo: "T-qf-2", AmountTotal: 100})
	err := jobs.Confirm(ctx, retry.Job{ID: 2, Attempt: 2, MaybeSent: true, Payload: mine})
	if !retry.IsPermanent(err) || !errors.Is(err, inventory.ErrIdempotencyMismatch) {
		t.Fatalf("query finds the key held for another order: err = %v, want it dead-lettered (permanent, mismatch)", err)
	}
	if n := inv.sent("/confirmations"); n != 1 {
		t.Fatalf("confirmations sent %d times, want 1 (the first job's only)", n)
	}
}

// readFails is the ledger failing the read named fail.
type readFails struct{ fail string }

var errRead = errors.New("read the ledger: connection refused")

func (o readFails) answer(read string) (bool, error) {
	if read == o.fail {
		return false, errRead
	}
	return false, nil
}

func (o readFails) RefundedInFull(context.Context, string) (bool, error) { return o.answer("in full") }
func (o readFails) ConfirmationSkipped(context.Context, string) (bool, error) {
	return o.answer("skipped")
}
func (o readFails) RefundedOutside(context.Context, string, uint64) (bool, error) {
	return o.answer("outside")
}

// TestLedgerReadFailureSendsNothing: a job reads its order before it acts
// (refunded in full, refunded outside the gateway, its confirmation
// skipped). When the read fails, the job sends nothing and is retried: it
// neither acts on what it could not read (confirming the stock of an order
// refunded outside the gateway; releasing stock never confirmed) nor
// gives up on it for good.
func TestLedgerReadFailureSendsNothing(t *testing.T) {
	var writes atomic.Int32
	sim := inventorysim.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			writes.Add(1)
		}
		sim.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	client := inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: time.Second})
	confirm, err := json.Marshal(inventory.Confirmation{Key: "cf-rf", OutTradeNo: "T-rf", AmountTotal: 100})
	if err != nil {
		t.Fatal(err)
	}
	release, err := json.Marshal(inventory.Release{Key: "rel-rf", OutRefundNo: "R-rf", OutTradeNo: "T-rf", Amount: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fail    string
		release bool
	}{{"outside", false}, {"in full", false}, {"skipped", true}} {
		jobs := &inventory.Jobs{Client: client, Orders: readFails{fail: tc.fail}}
		handle, payload := jobs.Confirm, confirm
		if tc.release {
			handle, payload = jobs.Release, release
		}
		err := handle(context.Background(), retry.Job{ID: 1, Attempt: 1, Payload: payload})
		if !errors.Is(err, errRead) || retry.IsPermanent(err) || retry.IsSkipped(err) || !retry.IsUnsent(err) {
			t.Fatalf("read %q fails: err = %v; want the read's error, retried, stored unsent", tc.fail, err)
		}
		if n := writes.Load(); n != 0 {
			t.Fatalf("read %q fails: %d writes sent to the inventory, want none", tc.fail, n)
		}
	}
}
