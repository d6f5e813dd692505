package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// overlongRefunds accepts every refund with the refund_id and
// transaction_id it holds.
type overlongRefunds struct{ refundID, txID string }

func (o overlongRefunds) CreateRefund(_ context.Context, req WxRefundRequest) (*WxRefund, error) {
	return &WxRefund{OutRefundNo: req.OutRefundNo, RefundID: o.refundID, TransactionID: o.txID, Status: "PROCESSING",
		Amount: req.Amount}, nil
}

func (o overlongRefunds) QueryRefund(context.Context, string) (*WxRefund, error) {
	return nil, ErrOutcomeUnknown
}

// TestRefundAnswerWithOverlongIDsIsNotRecorded: WeChat Pay's answer to a
// refund whose refund_id is longer than the ledger keeps (64) is not
// recorded, on every backend, and the refund is asked
// about again at the recheck, as for any answer the ledger cannot take:
// MariaDB's strict mode refused the row (a database error, and the janitor
// asked again at the end of every short claim) while SQLite stored it.
func TestRefundAnswerWithOverlongIDsIsNotRecorded(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for _, c := range []struct {
			no       string
			wx       overlongRefunds
			recorded bool
		}{
			{"ovl-rid", overlongRefunds{refundID: strings.Repeat("5", 65), txID: "tx-ovl-rid"}, false},
			// The refund has its order's transaction_id: the answer's is not written.
			{"ovl-txid", overlongRefunds{refundID: "50300001", txID: strings.Repeat("4", 65)}, true},
			{"ovl-fits", overlongRefunds{refundID: strings.Repeat("5", 64), txID: strings.Repeat("4", 64)}, true},
		} {
			paidBy(t, s, c.no, "o-"+c.no)
			svc := NewRefundService(RefundConfig{CallTimeout: 3 * time.Second, Recheck: time.Hour}, s, c.wx, NewMemoryLocker())
			if _, err := svc.Create(ctx, "o-"+c.no, "k-"+c.no, RefundParams{OutTradeNo: c.no, Amount: 40}); err != nil {
				t.Fatalf("%s: %v", c.no, err)
			}
			rs, err := s.Refunds(ctx, c.no)
			if err != nil || len(rs) != 1 {
				t.Fatalf("%s: %d refunds, %v", c.no, len(rs), err)
			}
			r := rs[0]
			switch {
			case c.recorded && (r.State != ledger.RefundProcessing || r.RefundID != c.wx.refundID):
				t.Errorf("%s: %s with refund_id %q, want PROCESSING with WeChat's", c.no, r.State, r.RefundID)
			case !c.recorded && (r.State == ledger.RefundProcessing || r.RefundID != ""):
				t.Errorf("%s: %s with refund_id %q, want the answer not recorded", c.no, r.State, r.RefundID)
			case !c.recorded && (r.NextCheckAt == nil || r.NextCheckAt.Before(s.Now().Add(50*time.Minute))):
				t.Errorf("%s: next check at %v, want it at the recheck, an hour on", c.no, r.NextCheckAt)
			}
		}
	})
}
