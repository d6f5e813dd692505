package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestARunLeavesOtherAppsPaymentsAlone: a merchant number serving several
// apps has one bill listing them all. A run of a gateway set to its own
// app repairs its own lost payment and leaves another app's payment out:
// not recorded, not reported. Recorded, its stock would be confirmed for
// an order this gateway never took.
func TestARunLeavesOtherAppsPaymentsAlone(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		line := func(app, tx, no string) string { return paidLine("2026-11-22 10:00:00", app, tx, no) }
		bills := &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			return []byte(billHeader + "\r\n" + line("wxmine", "tx-app-mine", "app-mine") + line("wxtheirs", "tx-app-theirs", "app-theirs")), nil
		}}
		r := &Reconciler{Store: s, Bills: bills, AppID: "wxmine", TakeOver: time.Date(2026, 11, 1, 0, 0, 0, 0, ledger.BusinessDay)}
		rep, err := r.Run(context.Background(), "2026-11-22", "finance")
		if err != nil || rep.BillPayments != 1 || rep.Mismatches != 1 || rep.Repaired != 1 || rep.Items[0].OutTradeNo != "app-mine" {
			t.Fatalf("run: %+v, %v; want this app's payment alone, repaired", rep, err)
		}
		if _, err := s.Payment(context.Background(), "app-theirs"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("another app's payment was recorded: %v", err)
		}
	})
}

// TestARunRepairsOnlyRowsWeChatPayConfirms: a run set to confirm bill rows
// asks about each row before repairing it, and a row WeChat Pay's answer
// does not confirm (a crafted product name's) is REFUSED and recorded
// nowhere. Not asked, the run would record a payment nobody made and
// confirm its stock.
func TestARunRepairsOnlyRowsWeChatPayConfirms(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		line := paidLine("2026-11-22 10:00:00", "wx1", "tx-forged", "forged-row")
		bills := &fakeBills{fn: func(context.Context, string) ([]byte, error) { return []byte(billHeader + "\r\n" + line), nil }}
		asked := 0
		confirm := func(context.Context, ledger.BillPayment) (ledger.Confirmed, error) {
			asked++
			return ledger.Confirmed{}, fmt.Errorf("%w: no such order", ledger.ErrBillUnconfirmed)
		}
		r := &Reconciler{Store: s, Bills: bills, Confirm: confirm, TakeOver: time.Date(2026, 11, 1, 0, 0, 0, 0, ledger.BusinessDay)}
		rep, err := r.Run(context.Background(), "2026-11-22", "finance")
		if err != nil || asked != 1 || len(rep.Items) != 1 || rep.Items[0].Repair != ledger.RepairRefused {
			t.Fatalf("run: %+v, %v, WeChat Pay asked %d times; want the row asked about once and REFUSED", rep, err, asked)
		}
		if _, err := s.Payment(context.Background(), "forged-row"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("an unconfirmed row was recorded: %v", err)
		}
	})
}
