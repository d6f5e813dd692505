package compensate

import (
	"context"
	"strings"
	"testing"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestAnswerWithOverlongIDsIsRefused: a paid query answer whose
// transaction_id (over 64) or payer openid (over 128) is longer than the
// ledger keeps is a failed check that writes nothing, on every backend, as
// such a callback is refused: MariaDB's strict mode refused the row (a
// database error at every check) while SQLite recorded the payment.
func TestAnswerWithOverlongIDsIsRefused(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		cases := []struct {
			no, txID, openid string
			want             string
		}{
			{"ovl-tx", strings.Repeat("4", 65), "o-payer", Failed},
			{"ovl-openid", "4200000001", strings.Repeat("o", 129), Failed},
			{"ovl-ok", strings.Repeat("4", 64), strings.Repeat("o", 128), Recovered},
		}
		for _, c := range cases {
			wx := &paidBy{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, mchID: "1900000001", appID: "wxapp",
				txID: c.txID, openid: c.openid}
			results := checkOnce(t, s, c.no, wx)
			p, _ := s.Payment(ctx, c.no)
			h, _ := s.History(ctx, c.no)
			n, _ := s.Notices(ctx, c.no)
			if len(results) != 1 || results[0] != c.want {
				t.Errorf("%s: results %v, want %s", c.no, results, c.want)
			}
			if c.want == Failed && (p.State != ledger.PaymentExpected || len(h) != 1 || len(n) != 0) {
				t.Errorf("%s: state %s, %d history rows, %d notices; want the order untouched", c.no, p.State, len(h), len(n))
			}
		}
	})
}
