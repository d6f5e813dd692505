package inventory_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"paygateway/gateway/inventory"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/retry"
)

// TestReleaseRetryAsksFirst: a release's first attempt took effect at the
// inventory but its answer was lost (502 after applying). The next
// attempt asks under the key, finds it applied, and is done without
// sending it again: query before retry, as for confirmations.
func TestReleaseRetryAsksFirst(t *testing.T) {
	sim := inventorysim.New()
	var mu sync.Mutex
	lost := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lose := !lost && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/releases")
		lost = lost || lose
		mu.Unlock()
		if lose {
			sim.Handler().ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, `{"code":"INTERNAL"}`, http.StatusBadGateway)
			return
		}
		sim.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	jobs := &inventory.Jobs{Client: inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: time.Second})}
	payload, err := json.Marshal(inventory.Release{Key: "rel-lost-1", OutRefundNo: "R-lost-1", OutTradeNo: "T-lost-1", Amount: 30})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := jobs.Release(ctx, retry.Job{ID: 1, Attempt: 1, Payload: payload}); err == nil {
		t.Fatal("first attempt, its answer lost: no error")
	}
	if err := jobs.Release(ctx, retry.Job{ID: 1, Attempt: 2, MaybeSent: true, Payload: payload}); err != nil {
		t.Fatalf("second attempt: %v, want done (the inventory has it)", err)
	}
	if blind := sim.ResentBlind(); len(blind) != 0 {
		t.Fatalf("resent without asking first: %v", blind)
	}
	if n := sim.AppliedByKey("rel-lost-1"); n != 1 {
		t.Fatalf("release applied %d times, want 1", n)
	}
}
