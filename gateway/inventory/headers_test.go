package inventory_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"paygateway/gateway/inventory"
	"paygateway/gateway/inventory/inventorysim"
)

// TestOversizedAnswerHeadersAreUnknown: an answer whose headers run past
// 64 KiB (a broken service or a proxy before it) ends the call as an
// unknown outcome, its confirmation applied or not; before, net/http read
// up to 10 MiB of them on each call and took the answer.
func TestOversizedAnswerHeadersAreUnknown(t *testing.T) {
	sim := inventorysim.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Padding", strings.Repeat("p", 1<<20))
		sim.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := inventory.New(inventory.Config{BaseURL: srv.URL})
	err := c.Confirm(context.Background(), inventory.Confirmation{Key: "big-headers", OutTradeNo: "T1", AmountTotal: 1})
	if !inventory.IsUnknown(err) {
		t.Fatalf("confirm answered with 1 MiB of headers: err=%v, want an unknown outcome", err)
	}
}
