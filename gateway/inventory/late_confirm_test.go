package inventory_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/ledger/ledgertest"
)

// TestLateConfirmationIsNotSkipped: attempt 1 of a confirmation reaches
// the inventory only after the client gave up (held at the server); the
// order is refunded in full; attempt 2's query gets 404 (not applied
// yet); then the first request applies. Attempt 2 must not skip (a skip
// takes the release with it: stock confirmed, never released): it sends
// again under the same key, and the release follows.
func TestLateConfirmationIsNotSkipped(t *testing.T) {
	ctx := context.Background()
	s := ledgertest.OpenSQLite(t)
	sim := inventorysim.New()
	// The first confirmation is held at the server until the client gives
	// up, unanswered and not applied; the test applies it later.
	late := make(chan *http.Request, 1)
	srv := httptest.NewServer(firstConfirmation(sim, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		held := httptest.NewRequest(r.Method, r.URL.String(), bytes.NewReader(body))
		held.Header = r.Header.Clone()
		late <- held
		<-r.Context().Done()
	}))
	defer srv.Close()
	pool := confirmPool(s, srv.URL)
	const no = "rv-inflight"
	pay(t, s, no)
	step := func() { // one attempt of whatever is due
		t.Helper()
		time.Sleep(5 * time.Millisecond) // past the 1 ms backoff
		if n, err := pool.RunOnce(ctx, "w"); n != 1 || err != nil {
			t.Fatalf("RunOnce = %d, %v; want one attempt", n, err)
		}
	}
	step() // confirmation, attempt 1: held at the server until the client gives up
	refundHere(t, s, no, 100)
	step() // attempt 2: the query finds nothing yet
	// Attempt 1's request lands now.
	sim.Handler().ServeHTTP(httptest.NewRecorder(), <-late)
	step() // the release
	if c, r := sim.ConfirmCount(no), sim.ReleaseCount(no); c != r {
		t.Fatalf("inventory: confirmed %d, released %d for an order refunded in full: stock confirmed, never released", c, r)
	}
}
