package inventorysim

import (
	"testing"
	"time"
)

// TestBookCountsApplications: a key is applied once however often it is
// replayed, and the per-key count is what was applied, not what the dedup
// holds: when the dedup lets a known key through (here it forgot it), the
// count shows the key applied twice, and the order confirmed twice.
func TestBookCountsApplications(t *testing.T) {
	b := newBook[confirmRequest, ConfirmationRecord]()
	now := time.Now()
	req := confirmRequest{Key: "k1", OutTradeNo: "T1", AmountTotal: 100}
	other := confirmRequest{Key: "k1", OutTradeNo: "T1", AmountTotal: 99}
	for i, w := range []struct {
		req  confirmRequest
		want outcome
	}{{req, applied}, {req, duplicate}, {other, mismatch}, {req, duplicate}} {
		if _, o := b.apply(w.req, now); o != w.want {
			t.Fatalf("write %d: outcome %d, want %d", i, o, w.want)
		}
	}
	if b.perKey["k1"] != 1 || b.perOrder["T1"] != 1 || b.list()[0].Applied != 1 {
		t.Fatalf("after replays: key applied %d, order %d, listed %d; want 1", b.perKey["k1"], b.perOrder["T1"],
			b.list()[0].Applied)
	}
	delete(b.byKey, "k1") // a dedup that lets k1 through again
	if _, o := b.apply(req, now); o != applied {
		t.Fatalf("outcome %d, want applied", o)
	}
	if b.perKey["k1"] != 2 || b.perOrder["T1"] != 2 || b.list()[0].Applied != 2 {
		t.Fatalf("after the dedup failed: key applied %d, order %d, listed %d; want 2", b.perKey["k1"],
			b.perOrder["T1"], b.list()[0].Applied)
	}
}
