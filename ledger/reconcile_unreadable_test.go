package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestParseTradeBillErrorsAreUnreadable: every refusal of the parser
// matches ErrBillUnreadable and keeps its line-numbered detail.
func TestParseTradeBillErrorsAreUnreadable(t *testing.T) {
	header := "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
	for _, bill := range []string{"not,a,bill\r\n", header + "\r\n`2024-05-01 09:00:00,`wx1,`190\r\n"} {
		_, err := ledger.ParseTradeBill([]byte(bill))
		if !errors.Is(err, ledger.ErrBillUnreadable) || !strings.Contains(err.Error(), "trade bill ") {
			t.Fatalf("ParseTradeBill(%q): %v, want ErrBillUnreadable with the parser's detail", bill, err)
		}
	}
	_, err := ledger.ParseTradeBill([]byte(header + "\r\n`2024-05-01 09:00:00,`wx1,`190\r\n"))
	if !strings.Contains(err.Error(), "trade bill line 2: ") {
		t.Fatalf("err = %v, want the line named", err)
	}
}

// TestUnreadableReport: the report of an unreadable bill on a day without
// a report of its bill is UNREADABLE, holds the reason cut to its column,
// is done for the daily job for a day only (UnreadableRecheck), and a run
// that reads the bill replaces it.
func TestUnreadableReport(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		bill := &ledger.Bill{Payments: []ledger.BillPayment{billPayment("lost-u", "tx-lost-u", 777)}}
		claim, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		cause := fmt.Errorf("%w: trade bill line 7: %s", ledger.ErrBillUnreadable, strings.Repeat("é", 400))
		rep, err := s.StoreUnreadable(ctx, claim, cause, "alice")
		if err != nil {
			t.Fatal(err)
		}
		stored, err := s.Reconciliation(ctx, reconcileDay)
		if err != nil || stored.Status != ledger.ReconcileUnreadable || rep.Status != ledger.ReconcileUnreadable ||
			stored.RequestedBy != "alice" || len(stored.Items) != 1 {
			t.Fatalf("unreadable report: %+v, %v (answered %+v)", stored, err, rep)
		}
		it := stored.Items[0]
		if it.Kind != ledger.MismatchBillUnreadable || !strings.HasPrefix(it.RepairDetail, cause.Error()[:60]) ||
			len(it.RepairDetail) > 512 || !utf8.ValidString(it.RepairDetail) {
			t.Fatalf("BILL_UNREADABLE item: %+v", it)
		}
		assertDone(t, s, true)
		assertDone(t, s.WithClock(func() time.Time { return time.Now().Add(ledger.UnreadableRecheck + time.Hour) }), false)

		again := reconcile(t, s, bill)
		if again.Status != ledger.ReconcileMismatched || item(again, "lost-u") == nil || len(again.Items) != 1 {
			t.Fatalf("run that reads the bill: %+v, want it to replace UNREADABLE", again)
		}
		assertDone(t, s.WithClock(func() time.Time { return time.Now().Add(ledger.UnreadableRecheck + time.Hour) }), true)
	})
}

// assertDone checks whether ReconciledDays, on s's clock, counts
// reconcileDay done.
func assertDone(t *testing.T, s *ledger.Store, want bool) {
	t.Helper()
	done, err := s.ReconciledDays(context.Background(), reconcileDay, reconcileDay, "2000-01-01")
	if err != nil || done[reconcileDay] != want {
		t.Fatalf("ReconciledDays at %v: %v, %v; want done=%v", s.Now(), done, err, want)
	}
}

// TestUnreadableRerunKeepsTheBillsReport: a MISMATCHED day (here a bill
// payment from before the take-over, DEFERRED for a person) run again with
// a parser that now refuses the same bill keeps its report: the rerun
// compared nothing, and must not erase the open mismatch or the totals.
func TestUnreadableRerunKeepsTheBillsReport(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		old := billPayment("old-system", "tx-old", 300)
		first := reconcile(t, s, &ledger.Bill{Payments: []ledger.BillPayment{old}, TakeOver: old.Time.Add(time.Hour)})
		if first.Status != ledger.ReconcileMismatched || item(first, "old-system") == nil {
			t.Fatalf("first run: %+v", first)
		}
		claim, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := s.StoreUnreadable(ctx, claim, fmt.Errorf("%w: line 3", ledger.ErrBillUnreadable), "bob")
		if err != nil || rep.Status != ledger.ReconcileMismatched {
			t.Fatalf("StoreUnreadable over a MISMATCHED report: %+v, %v; want the report kept", rep, err)
		}
		again, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute) // the claim was handed back
		if err != nil {
			t.Fatalf("claim after the kept report: %v", err)
		}
		if err := s.ReleaseReconciliation(ctx, again); err != nil {
			t.Fatal(err)
		}
		stored, err := s.Reconciliation(ctx, reconcileDay)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Status != ledger.ReconcileMismatched || item(stored, "old-system") == nil ||
			stored.BillPaid != first.BillPaid || stored.RequestedBy != first.RequestedBy {
			t.Fatalf("after an unreadable rerun: %+v, want the first report %+v", stored, first)
		}
	})
}
