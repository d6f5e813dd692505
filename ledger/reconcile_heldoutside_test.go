package ledger_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestReconcileFlagHoldsADeadConfirmation: a registered order is paid
// another amount, so its stock confirmation is stored dead, held for a
// person, who looks at it (version V). Reconciliation then finds the
// payment in the bill refunded outside the gateway (trade_state REFUND),
// but the payment was recorded while the run checked it, so the repair
// only flags REFUNDED_OUTSIDE. The dead confirmation must say so, as it
// does when a refund notice brings the news (flagUnheld): its last error
// says held for the refund outside and its version moves, so a replay
// decided on V is refused (412) instead of confirming the stock of an
// order whose money went back, unasked (a replay after the flag sends).
func TestReconcileFlagHoldsADeadConfirmation(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "rch-1"
		registerOther(t, s, no)
		seen := jobByKey(t, s, no, "confirm:"+no)
		if seen.State != ledger.JobDead || !strings.HasPrefix(seen.LastError, heldAmountPrefix) {
			t.Fatalf("confirmation = %+v, want dead, held for the amount", seen)
		}
		time.Sleep(2 * time.Millisecond) // a new version is a later microsecond
		bp := ledger.BillPayment{Time: time.Date(2026, 11, 23, 1, 2, 3, 0, time.UTC), AppID: "wxapp", MchID: "1900000001",
			TransactionID: "tx-" + no, OutTradeNo: no, OpenID: "openid-1", Amount: 499, Currency: "CNY", Line: "bill line"}
		if repair, _, err := s.RepairPayment(ctx, bp, ledger.Confirmed{Refunded: true, PayerTotal: 499}); err != nil || repair != "" {
			t.Fatalf("repair of a payment recorded meanwhile = %q, %v; want none", repair, err)
		}
		a, err := s.Anomalies(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		flagged := false
		for _, x := range a {
			flagged = flagged || x.Kind == ledger.AnomalyRefundedOutside
		}
		if !flagged {
			t.Fatalf("anomalies %+v, want REFUNDED_OUTSIDE", a)
		}
		now := jobByKey(t, s, no, "confirm:"+no)
		if now.State != ledger.JobDead || !strings.HasPrefix(now.LastError, "held: WeChat Pay reports the order refunded outside the gateway") ||
			!strings.Contains(now.LastError, "registered for 500 fen") {
			t.Errorf("confirmation after the flag: %+v, want dead, held for the refund outside, keeping the amount's reason", now)
		}
		job, err := s.Outbox().ReplayIf(ctx, seen.ID, "ops:test", []string{seen.Version})
		if !errors.Is(err, ledger.ErrStale) {
			t.Fatalf("replay as seen before the flag: job %+v, err = %v; want ErrStale", job, err)
		}
		if job, err := s.Outbox().ReplayIf(ctx, seen.ID, "ops:test", []string{now.Version}); err != nil || job.State != ledger.JobPending {
			t.Fatalf("replay as seen after the flag: %+v, %v; want it back in the queue", job, err)
		}
	})
}
