package compensate

import (
	"fmt"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestAnOrderClosedAtWeChatPayIsClosed: an order WeChat Pay answers
// CLOSED (closed there, by its expiry or by the merchant) can no longer be
// paid, so the ledger closes it too, at once and without closing it at
// WeChat Pay again. Left open, it would be asked about every run and never
// closed, its stock held for good.
func TestAnOrderClosedAtWeChatPayIsClosed(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		s, t0, set := onClock(base)
		no := fmt.Sprintf("closed-there-%d", t0.UnixNano())
		expecting(t, s, t0, no)
		wx := &oneState{state: "CLOSED"}
		var results []string
		set(2 * time.Minute)
		p := runOnce(t, testJob(s, wx, &results), s, no)
		if p.State != ledger.PaymentClosed || wx.closes != 0 || wx.total() != 1 || len(results) != 1 || results[0] != Closed {
			t.Fatalf("order %s after %d closes, %d queries, results %v; want CLOSED after 1 query, no close, closed",
				p.State, wx.closes, wx.total(), results)
		}
	})
}
