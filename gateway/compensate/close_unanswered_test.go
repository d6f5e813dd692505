package compensate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// thenSilent answers the first query as oneState does and every later one
// with no answer (a timeout: the outcome is unknown).
type thenSilent struct{ oneState }

func (q *thenSilent) QueryOrder(ctx context.Context, no string) (*wechatpay.Transaction, error) {
	if q.total() == 0 {
		return q.oneState.QueryOrder(ctx, no)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queries++
	return nil, fmt.Errorf("query order %s: %w", no, wechatpay.ErrUnknownOutcome)
}

// TestNoAnswerAfterTheCloseClosesNothing: an expired unpaid order is
// closed at WeChat Pay, then asked about again; when that second query
// gets no answer, the order may have been paid between the first query and
// the close, so the ledger leaves it open (asked again next run). Closing
// it on no answer would release the stock of an order the payer paid.
func TestNoAnswerAfterTheCloseClosesNothing(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		s, t0, set := onClock(base)
		for i, state := range []string{"NOTPAY", "", "PAYERROR"} {
			no := fmt.Sprintf("silent-%d-%d", i, t0.UnixNano())
			set(0)
			expecting(t, s, t0, no)
			wx := &thenSilent{oneState: oneState{state: state}}
			var results []string
			set(time.Hour)
			p := runOnce(t, testJob(s, wx, &results), s, no)
			if p.State != ledger.PaymentExpected || wx.closes != 1 || wx.total() != 2 || len(results) != 1 || results[0] != Failed {
				t.Fatalf("%q, then no answer after the close: order %s, %d closes, %d queries, results %v; "+
					"want EXPECTED after 1 close, 2 queries, failed", state, p.State, wx.closes, wx.total(), results)
			}
			h, err := s.History(context.Background(), no)
			for _, tr := range h {
				if err != nil || tr.To == string(ledger.PaymentClosed) {
					t.Fatalf("history of %s: %+v, %v; want no close", no, h, err)
				}
			}
		}
	})
}
