package ledger_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// reconcileDay is the business day the reconciliation tests use.
const reconcileDay = "2026-11-23"

func billPayment(outTradeNo, txID string, amount int64) ledger.BillPayment {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, ledger.BusinessDay).UTC()
	return ledger.BillPayment{Time: at, AppID: "wxapp", MchID: "1900000001", TransactionID: txID,
		OutTradeNo: outTradeNo, OpenID: "openid-1", Amount: amount, Line: "`line of " + outTradeNo}
}

// reconcile claims the day and runs one reconciliation of bill.
func reconcile(t *testing.T, s *ledger.Store, bill *ledger.Bill) *ledger.Reconciliation {
	t.Helper()
	return reconcileOn(t, s, reconcileDay, bill)
}

// assertRepaired reads the payment back: a repair counts only if the
// ledger holds it paid with the bill's transaction and amount, not because
// the reconciler's report says RepairApplied.
func assertRepaired(t *testing.T, s *ledger.Store, bp ledger.BillPayment) {
	t.Helper()
	p, err := s.Payment(context.Background(), bp.OutTradeNo)
	if err != nil {
		t.Fatalf("repaired payment %s: %v", bp.OutTradeNo, err)
	}
	if p.State != ledger.PaymentSuccess || p.AmountTotal != bp.Amount || p.TransactionID != bp.TransactionID {
		t.Fatalf("repaired payment %s = %s %d fen %s, want SUCCESS %d fen %s", bp.OutTradeNo, p.State, p.AmountTotal,
			p.TransactionID, bp.Amount, bp.TransactionID)
	}
}

func item(rep *ledger.Reconciliation, outTradeNo string) *ledger.ReconcileItem {
	for i := range rep.Items {
		if rep.Items[i].OutTradeNo == outTradeNo {
			return &rep.Items[i]
		}
	}
	return nil
}

// TestReconcileRerunKeepsRepairs: a rerun of a day reports the payments an
// earlier run repaired (rebuilt from the state history, so even when that
// run never stored its report) and keeps its refusals (here a payment in
// USD); the day stays MISMATCHED.
func TestReconcileRerunKeepsRepairs(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "refused", AmountTotal: 500, PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatal(err)
		}
		bill := &ledger.Bill{Payments: []ledger.BillPayment{billPayment("lost-cb", "tx-lost", 777), billPayment("refused", "tx-refused", 600)}}
		bill.Payments[1].Currency = "USD"
		first := reconcile(t, s, bill)
		if it := item(first, "lost-cb"); it == nil || it.Repair != ledger.RepairApplied || first.Repaired != 1 {
			t.Fatalf("first run: %+v", first)
		}
		if it := item(first, "refused"); it == nil || it.Repair != ledger.RepairRefused {
			t.Fatalf("first run: %+v", first)
		}
		assertRepaired(t, s, bill.Payments[0])
		// The refused payment is settled by hand; a run that repaired
		// "crashed" died before storing its report.
		if err := s.DB().Exec("UPDATE payments SET state = 'SUCCESS', transaction_id = 'tx-refused', amount_total = 600, success_time = ? WHERE out_trade_no = 'refused'",
			bill.Payments[1].Time).Error; err != nil {
			t.Fatal(err)
		}
		// The bill reissued in CNY: against one still in USD, the ledger's
		// CNY would be a mismatch of its own (TestReconcileReportsPaidInOtherCurrency).
		bill.Payments[1].Currency = "CNY"
		crashed := billPayment("crashed", "tx-crashed", 300)
		if _, err := s.ApplyTransaction(ctx, ledger.TransactionUpdate{
			Notice:     ledger.Notice{NotifyID: "reconcile:tx-crashed", Source: ledger.SourceReconcile, EventType: "RECONCILE.SUCCESS", OutTradeNo: "crashed"},
			OutTradeNo: "crashed", TransactionID: "tx-crashed", TradeState: "SUCCESS", AmountTotal: 300, PayerTotal: 300,
			Currency: "CNY", SuccessTime: crashed.Time}); err != nil {
			t.Fatal(err)
		}
		bill.Payments = append(bill.Payments, crashed)

		again := reconcile(t, s, bill)
		if again.Status != ledger.ReconcileMismatched || again.Mismatches != 3 || again.Repaired != 2 || again.Runs != 2 {
			t.Fatalf("rerun: %+v", again)
		}
		for _, no := range []string{"lost-cb", "crashed"} {
			if it := item(again, no); it == nil || it.Kind != ledger.MismatchPaymentMissingInLedger ||
				it.Repair != ledger.RepairApplied || it.Ledger != nil || !strings.HasPrefix(it.RepairDetail, "repaired at ") {
				t.Fatalf("rerun lost the repair of %s: %+v", no, again.Items)
			}
		}
		if it := item(again, "refused"); it == nil || it.Repair != ledger.RepairRefused || !strings.HasPrefix(it.RepairDetail, "earlier run: ") {
			t.Fatalf("rerun lost the refusal: %+v", again.Items)
		}
		stored, err := s.Reconciliation(ctx, reconcileDay)
		if err != nil || stored.Mismatches != 3 || len(stored.Items) != 3 || stored.Repaired != 2 {
			t.Fatalf("stored = %+v, %v", stored, err)
		}
		third := reconcile(t, s, bill)
		if third.Mismatches != 3 || strings.Count(item(third, "refused").RepairDetail, "earlier run: ") != 1 {
			t.Fatalf("third run: %+v", third.Items)
		}
	})
}

// TestReconcileClaim: one run per day at a time; a lease that ran out is
// taken over, and the run that lost it cannot store its report.
func TestReconcileClaim(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		now := time.Now().UTC()
		clock := func() time.Time { return now }
		s = s.WithClock(func() time.Time { return clock() })
		first, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute); !errors.Is(err, ledger.ErrClaimed) {
			t.Fatalf("second claim: err=%v, want ErrClaimed", err)
		}
		if _, err := s.Reconciliation(ctx, reconcileDay); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a claimed day without a report: err=%v, want ErrNotFound", err)
		}
		if err := s.ReleaseReconciliation(ctx, first); err != nil {
			t.Fatal(err)
		}
		second, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute)
		if err != nil {
			t.Fatalf("claim after release: %v", err)
		}
		clock = func() time.Time { return now.Add(2 * time.Minute) } // second's run died
		third, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute)
		if err != nil {
			t.Fatalf("claim after the lease ran out: %v", err)
		}
		if _, err := s.Reconcile(ctx, second, &ledger.Bill{}, "late"); !errors.Is(err, ledger.ErrClaimed) {
			t.Fatalf("report under a lost claim: err=%v, want ErrClaimed", err)
		}
		if err := s.ReleaseReconciliation(ctx, second); err != nil {
			t.Fatal(err)
		}
		rep, err := s.Reconcile(ctx, third, &ledger.Bill{}, "third")
		if err != nil || rep.Runs != 1 || rep.Status != ledger.ReconcileMatched {
			t.Fatalf("report = %+v, %v", rep, err)
		}
		if _, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute); err != nil {
			t.Fatalf("a stored report ends the claim: %v", err)
		}
	})
}

// TestReconcileTakeOver: a bill payment from before the gateway took over
// that the ledger does not know was fulfilled by the system before: it is
// reported DEFERRED and not recorded; so is one within BillTimeSlack after
// it, as Confirm pins a row's time no closer to WeChat Pay's. A registered
// order of the same morning, and an unknown payment after the take-over,
// are repaired.
func TestReconcileTakeOver(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "registered", AmountTotal: 500, PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatal(err)
		}
		old, registered, lost := billPayment("old-system", "tx-old", 300), billPayment("registered", "tx-reg", 500), billPayment("lost-cb", "tx-lost", 700)
		lost.Time = lost.Time.Add(2 * time.Hour)
		takeOver := old.Time.Add(time.Hour)
		edge := billPayment("at-take-over", "tx-edge", 400)
		edge.Time = takeOver.Add(ledger.BillTimeSlack - time.Nanosecond)
		bill := &ledger.Bill{Payments: []ledger.BillPayment{old, registered, lost, edge}, TakeOver: takeOver}
		rep := reconcile(t, s, bill)
		for _, no := range []string{"old-system", "at-take-over"} {
			if it := item(rep, no); it == nil || it.Kind != ledger.MismatchPaymentMissingInLedger ||
				it.Repair != ledger.RepairDeferred || !strings.Contains(it.RepairDetail, "before the gateway took over") {
				t.Fatalf("%s: %+v", no, rep.Items)
			}
		}
		for _, bp := range []ledger.BillPayment{registered, lost} {
			if it := item(rep, bp.OutTradeNo); it == nil || it.Repair != ledger.RepairApplied {
				t.Fatalf("%s not repaired: %+v", bp.OutTradeNo, rep.Items)
			}
			assertRepaired(t, s, bp)
		}
		if rep.Repaired != 2 || rep.Mismatches != 4 {
			t.Fatalf("report: %+v", rep)
		}
		for _, no := range []string{"old-system", "at-take-over"} {
			if _, err := s.Payment(ctx, no); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("%s recorded: %v", no, err)
			}
		}
	})
}

// TestReconcileRepairFailureFailsTheRun: a repair that fails to reach the
// database (not a refusal by the ledger) fails the run, so no report says
// "refused" for a day the backoff will retry; the rerun repairs it.
func TestReconcileRepairFailureFailsTheRun(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		failing := true
		err := s.DB().Callback().Create().Before("gorm:create").Register("test:lost_connection", func(db *gorm.DB) {
			if failing && db.Statement.Table == "payments" {
				_ = db.AddError(driver.ErrBadConn)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		bill := &ledger.Bill{Payments: []ledger.BillPayment{billPayment("lost-conn", "tx-lost-conn", 420)}}
		claim, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := s.Reconcile(ctx, claim, bill, "test"); err == nil || !errors.Is(err, driver.ErrBadConn) {
			t.Fatalf("reconcile with the database failing the repair: rep=%+v err=%v, want the error", rep, err)
		}
		if _, err := s.Reconciliation(ctx, reconcileDay); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a report was stored for the failed run: err=%v", err)
		}
		if err := s.ReleaseReconciliation(ctx, claim); err != nil { // as the Reconciler does
			t.Fatal(err)
		}
		failing = false
		rep := reconcile(t, s, bill)
		if it := item(rep, "lost-conn"); it == nil || it.Repair != ledger.RepairApplied {
			t.Fatalf("rerun: %+v", rep)
		}
	})
}

// TestRefundBelongsToTheDayWeChatAcceptedIt: a refund recorded just before
// midnight (UTC+8) that WeChat Pay accepts just after is in the next day's
// bill, so it is reconciled on that day, not reported missing from the
// first; one WeChat accepted a moment before the ledger recorded it (the
// clocks differ) goes the other way. Both days are found to have
// settlements only where their refunds are.
func TestRefundBelongsToTheDayWeChatAcceptedIt(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "acc-order", 1000) // paid on 2026-11-23
		at := func(day, clock string) time.Time {
			v, err := time.ParseInLocation("2006-01-02 15:04:05.000", day+" "+clock, ledger.BusinessDay)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		refunds := []struct {
			no                string
			created, accepted time.Time
		}{
			{"rf-late", at("2026-11-23", "23:59:59.500"), at("2026-11-24", "00:00:02.000")},
			{"rf-early", at("2026-11-25", "00:00:00.300"), at("2026-11-24", "23:59:59.800")},
			{"rf-same", at("2026-11-24", "12:00:00.000"), at("2026-11-24", "12:00:00.500")}, // streamed once, not twice
		}
		for _, r := range refunds {
			if _, err := s.CreateRefund(ctx, refundReq("acc-order", r.no, 100)); err != nil {
				t.Fatal(err)
			}
			if err := s.DB().Exec("UPDATE refunds SET created_at = ? WHERE out_refund_no = ?", r.created.UTC(), r.no).Error; err != nil {
				t.Fatal(err)
			}
			for _, u := range []ledger.RefundUpdate{
				{OutRefundNo: r.no, State: ledger.RefundProcessing, AcceptTime: r.accepted, Source: ledger.SourceQuery},
				{OutRefundNo: r.no, State: ledger.RefundSuccess, SuccessTime: r.accepted.Add(time.Minute), Source: ledger.SourceCallback},
				{OutRefundNo: r.no, State: ledger.RefundSuccess, AcceptTime: r.accepted.Add(time.Hour), Source: ledger.SourceQuery},
			} {
				if _, err := s.ApplyRefund(ctx, u); err != nil && !errors.Is(err, ledger.ErrAlreadyRecorded) {
					t.Fatal(err)
				}
			}
			if got, err := s.Refund(ctx, r.no); err != nil || got.AcceptedAt == nil || !got.AcceptedAt.Equal(r.accepted) {
				t.Fatalf("refund %s accepted at %v (%v), want the first time stated, %v", r.no, got, err, r.accepted)
			}
		}
		bill := func(nos ...string) *ledger.Bill {
			b := &ledger.Bill{}
			for _, no := range nos {
				b.Refunds = append(b.Refunds, ledger.BillRefund{OutTradeNo: "acc-order", OutRefundNo: no, Status: "SUCCESS", Amount: 100})
			}
			return b
		}
		first := reconcileOn(t, s, "2026-11-23", &ledger.Bill{Payments: []ledger.BillPayment{billPayment("acc-order", "tx-acc-order", 1000)}})
		if first.Status != ledger.ReconcileMatched || first.LedgerRefunds != 0 || len(first.Items) != 0 {
			t.Fatalf("the day the late refund was recorded: %+v", first)
		}
		next := reconcileOn(t, s, "2026-11-24", bill("rf-late", "rf-early", "rf-same"))
		if next.Status != ledger.ReconcileMatched || next.LedgerRefunds != 3 || next.LedgerRefunded != 300 || len(next.Items) != 0 {
			t.Fatalf("the day WeChat accepted all three: %+v", next)
		}
		third := reconcileOn(t, s, "2026-11-25", bill())
		if third.LedgerRefunds != 0 || len(third.Items) != 0 {
			t.Fatalf("the day the early refund was recorded: %+v", third)
		}
		for day, want := range map[string]bool{"2026-11-24": true, "2026-11-25": false} {
			if got, err := s.HasSettlements(ctx, day); err != nil || got != want {
				t.Fatalf("HasSettlements(%s) = %v, %v; want %v", day, got, err, want)
			}
		}
	})
}

// reconcileOn claims day and runs one reconciliation of bill.
func reconcileOn(t *testing.T, s *ledger.Store, day string, bill *ledger.Bill) *ledger.Reconciliation {
	t.Helper()
	claim, err := s.ClaimReconciliation(context.Background(), day, time.Minute)
	if err != nil {
		t.Fatalf("claim %s: %v", day, err)
	}
	rep, err := s.Reconcile(context.Background(), claim, bill, "test")
	if err != nil {
		t.Fatalf("reconcile %s: %v", day, err)
	}
	return rep
}

// TestNoBillWithSettlementsFailsTheRun: WeChat Pay's "no bill" is an empty
// bill only while the ledger settled nothing that day. A payment recorded
// after the caller looked (a callback redelivered) fails the run with
// ErrBillNotOut and stores nothing, rather than a MISMATCHED day (final)
// that reports it missing from the bill.
func TestNoBillWithSettlementsFailsTheRun(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n-nobill", "nobill-1", "tx-nobill", 100)); err != nil {
			t.Fatal(err)
		}
		claim, err := s.ClaimReconciliation(ctx, reconcileDay, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Reconcile(ctx, claim, &ledger.Bill{NoStatement: true}, "test"); !errors.Is(err, ledger.ErrBillNotOut) {
			t.Fatalf("no bill, a payment settled that day: err = %v, want ErrBillNotOut", err)
		}
		if rep, err := s.Reconciliation(ctx, reconcileDay); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a report was stored: %+v, %v", rep, err)
		}
	})
}

// TestRefundsWithoutAcceptanceLatestFirst: the look-up of acceptance
// times is bounded, so it asks about a day's latest refunds first: those
// recorded near midnight are the ones WeChat may have accepted the next
// day.
func TestRefundsWithoutAcceptanceLatestFirst(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		now := time.Now() // one instant: the refunds and the day asked about cannot fall either side of midnight
		s = s.WithClock(func() time.Time { return now })
		paidOrder(t, s, "wa", 1000)
		for _, no := range []string{"rf-wa-morning", "rf-wa-noon", "rf-wa-midnight"} {
			if _, err := s.CreateRefund(ctx, refundReq("wa", no, 100)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: no, State: ledger.RefundSuccess,
				SuccessTime: now, Source: ledger.SourceCallback}); err != nil {
				t.Fatal(err)
			}
		}
		nos, err := s.RefundsWithoutAcceptance(ctx, ledger.DayOf(now), 2)
		if err != nil || len(nos) != 2 || nos[0] != "rf-wa-midnight" || nos[1] != "rf-wa-noon" {
			t.Fatalf("asked about %v (%v), want the two latest, latest first", nos, err)
		}
	})
}

// TestReconcileLeavesOtherAppsOut: the bill of a merchant number that
// serves several apps lists them all. A payment and a refund of another
// app are another system's: left out of the report and never repaired
// (no payment recorded, no stock confirmed); this app's lost payment is.
func TestReconcileLeavesOtherAppsOut(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		mine, theirs := billPayment("oa-mine", "tx-oa-mine", 300), billPayment("oa-theirs", "tx-oa-theirs", 400)
		mine.AppID, theirs.AppID = "wxmine", "wxtheirs"
		refund := ledger.BillRefund{Time: theirs.Time, AppID: "wxtheirs", TransactionID: "tx-oa-theirs", OutTradeNo: "oa-theirs",
			RefundID: "wxr-oa", OutRefundNo: "rf-oa-theirs", Status: "SUCCESS", Amount: 100}
		rep := reconcile(t, s, &ledger.Bill{Payments: []ledger.BillPayment{mine, theirs}, Refunds: []ledger.BillRefund{refund}, AppID: "wxmine"})
		if it := item(rep, "oa-mine"); it == nil || it.Repair != ledger.RepairApplied {
			t.Fatalf("this app's lost payment not repaired: %+v", rep.Items)
		}
		if rep.Mismatches != 1 || rep.BillPayments != 1 || rep.BillRefunds != 0 || item(rep, "oa-theirs") != nil {
			t.Fatalf("report %+v, want only this app's payment", rep)
		}
		if _, err := s.Payment(ctx, "oa-theirs"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("another app's payment recorded: %v", err)
		}
	})
}

// TestReconcileRefusesOtherCurrency: a bill payment in a currency other
// than CNY is not repaired into the ledger's fen of CNY: it is refused and
// flagged as the callback and the lost-callback check would have it. One
// in "cny" is CNY.
func TestReconcileRefusesOtherCurrency(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		usd, cny := billPayment("oc-usd", "tx-oc-usd", 300), billPayment("oc-cny", "tx-oc-cny", 400)
		usd.Currency, cny.Currency = "USD", "cny"
		rep := reconcile(t, s, &ledger.Bill{Payments: []ledger.BillPayment{usd, cny}})
		if it := item(rep, "oc-usd"); it == nil || it.Repair != ledger.RepairRefused || !strings.Contains(it.RepairDetail, "USD") {
			t.Fatalf("USD bill payment: %+v, want REFUSED naming USD", it)
		}
		if _, err := s.Payment(ctx, "oc-usd"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("USD payment recorded: %v", err)
		}
		if a, _ := s.Anomalies(ctx, "oc-usd"); len(a) != 1 || a[0].Kind != ledger.AnomalyAmountMismatch {
			t.Fatalf("anomalies = %+v, want one AMOUNT_MISMATCH", a)
		}
		assertRepaired(t, s, cny)
		if p, _ := s.Payment(ctx, "oc-cny"); p.Currency != "CNY" {
			t.Fatalf("currency %q, want CNY", p.Currency)
		}
	})
}

// TestReconcileReportsPaidInOtherCurrency: a bill payment the ledger holds
// paid (its callback said CNY) that the bill lists in another currency is
// a mismatch of the amount, as another number is: the same 100 is not the
// same money. The day is not MATCHED; the payment is left as recorded.
func TestReconcileReportsPaidInOtherCurrency(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for _, no := range []string{"ocur-usd", "ocur-cny"} {
			if _, err := s.ApplyTransaction(ctx, paid("n-"+no, no, "tx-"+no, 100)); err != nil {
				t.Fatal(err)
			}
		}
		usd, cny := billPayment("ocur-usd", "tx-ocur-usd", 100), billPayment("ocur-cny", "tx-ocur-cny", 100)
		usd.Currency, cny.Currency = "USD", "CNY"
		rep := reconcile(t, s, &ledger.Bill{Payments: []ledger.BillPayment{usd, cny}})
		it := item(rep, "ocur-usd")
		if rep.Status != ledger.ReconcileMismatched || it == nil || it.Kind != ledger.MismatchPaymentAmount ||
			it.Repair != ledger.RepairDeferred || !strings.Contains(it.RepairDetail, "USD") {
			t.Fatalf("report %+v, want the USD row a PAYMENT_AMOUNT_MISMATCH naming USD", rep)
		}
		if item(rep, "ocur-cny") != nil || rep.Mismatches != 1 {
			t.Fatalf("items %+v, want only the USD row", rep.Items)
		}
		if p, _ := s.Payment(ctx, "ocur-usd"); p.Currency != "CNY" || p.AmountTotal != 100 {
			t.Fatalf("payment = %+v, want it as recorded", p)
		}
	})
}

// TestReconcileRepairsOtherAmount: a confirmed bill payment of a
// registered order, for another amount than registered, is repaired as
// its callback would be recorded: SUCCESS with what was paid, flagged
// AMOUNT_MISMATCH, its stock confirmation held (with REFUNDED_OUTSIDE too
// when WeChat Pay reports it refunded since), the detail saying so. The
// row is still confirmed with WeChat Pay first: one it does not confirm is
// REFUSED and changes nothing. A rerun reports the repair.
func TestReconcileRepairsOtherAmount(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for _, no := range []string{"ra-other", "ra-refunded", "ra-unconfirmed"} {
			o := ledger.Order{OutTradeNo: no, AmountTotal: 500, PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}
			if _, err := s.RegisterOrder(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		asked := map[string]bool{}
		confirm := func(_ context.Context, bp ledger.BillPayment) (ledger.Confirmed, error) {
			asked[bp.OutTradeNo] = true
			if bp.OutTradeNo == "ra-unconfirmed" {
				return ledger.Confirmed{}, fmt.Errorf("%w: paid by transaction tx-ra-unconfirmed, 500 fen", ledger.ErrBillUnconfirmed)
			}
			return ledger.Confirmed{Refunded: bp.OutTradeNo == "ra-refunded", PayerTotal: bp.Amount}, nil
		}
		bill := &ledger.Bill{Payments: []ledger.BillPayment{billPayment("ra-other", "tx-ra-other", 499),
			billPayment("ra-refunded", "tx-ra-refunded", 499), billPayment("ra-unconfirmed", "tx-ra-unconfirmed", 499)},
			Confirm: confirm}
		rep := reconcile(t, s, bill)
		if len(asked) != 3 {
			t.Fatalf("rows confirmed with WeChat Pay: %v, want all three", asked)
		}
		for i, tc := range []struct {
			no     string
			detail []string
			flags  int
		}{
			{"ra-other", []string{"registered for 500 fen, paid 499 fen (anomaly AMOUNT_MISMATCH)"}, 1},
			{"ra-refunded", []string{"REFUNDED_OUTSIDE", "registered for 500 fen, paid 499 fen"}, 2},
		} {
			it := item(rep, tc.no)
			if it == nil || it.Kind != ledger.MismatchPaymentMissingInLedger || it.Repair != ledger.RepairApplied {
				t.Fatalf("%s: item %+v, want PAYMENT_MISSING_IN_LEDGER repaired", tc.no, it)
			}
			for _, d := range tc.detail {
				if !strings.Contains(it.RepairDetail, d) || !strings.Contains(it.RepairDetail, "held for a person") {
					t.Fatalf("%s: detail %q, want it to name %q and the hold", tc.no, it.RepairDetail, d)
				}
			}
			assertRepaired(t, s, bill.Payments[i])
			if p, _ := s.Payment(ctx, tc.no); p.AmountTotal != 499 || p.ExpectedAmount != 500 || p.State != ledger.PaymentSuccess {
				t.Fatalf("%s: payment %+v, want SUCCESS 499 of the registered 500", tc.no, p)
			}
			if jobs, _ := s.Outbox().JobsOf(ctx, tc.no); len(jobs) != 1 || jobs[0].State != ledger.JobDead ||
				!strings.Contains(jobs[0].LastError, "registered for 500 fen and paid 499 fen") {
				t.Fatalf("%s: jobs %+v, want the confirmation held, naming the amounts", tc.no, jobs)
			}
			if a, _ := s.Anomalies(ctx, tc.no); len(a) != tc.flags || a[0].Kind != ledger.AnomalyAmountMismatch ||
				a[0].Ref != "paid:tx-"+tc.no {
				t.Fatalf("%s: anomalies %+v, want AMOUNT_MISMATCH paid:tx-%s (and %d in all)", tc.no, a, tc.no, tc.flags)
			}
		}
		if it := item(rep, "ra-unconfirmed"); it == nil || it.Repair != ledger.RepairRefused || !strings.Contains(it.RepairDetail, "500 fen") {
			t.Fatalf("unconfirmed row: %+v, want REFUSED with WeChat Pay's answer", it)
		}
		if p, _ := s.Payment(ctx, "ra-unconfirmed"); p.State != ledger.PaymentExpected {
			t.Fatalf("unconfirmed row paid the order: %+v", p)
		}
		if a, _ := s.Anomalies(ctx, "ra-unconfirmed"); len(a) != 0 {
			t.Fatalf("unconfirmed row flagged: %+v", a)
		}
		again := reconcile(t, s, bill)
		if it := item(again, "ra-other"); it == nil || it.Repair != ledger.RepairApplied || !strings.HasPrefix(it.RepairDetail, "repaired at ") {
			t.Fatalf("rerun: %+v, want the repair reported", again.Items)
		}
	})
}

// TestRepairRaceWithTheCallback: the payment's callback is recorded
// between the run's read of the ledger and its repair. The repair finds
// it recorded: no mismatch, nothing reported as repaired.
func TestRepairRaceWithTheCallback(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		bp := billPayment("race-cb", "tx-race-cb", 300)
		if _, err := s.ApplyTransaction(ctx, paid("n-race-cb", "race-cb", "tx-race-cb", 300)); err != nil {
			t.Fatal(err)
		}
		if it, err := s.CheckPaymentAsRead(ctx, bp); it != nil || err != nil {
			t.Fatalf("item %+v, err %v; want no mismatch", it, err)
		}
		if h, _ := s.History(ctx, "race-cb"); len(h) != 1 || h[0].Source != ledger.SourceCallback {
			t.Fatalf("history %+v, want the callback's transition only", h)
		}
	})
}

// TestRepairRaceWithTheCallbackOfARefundedPayment: as above, but WeChat
// Pay reports the payment refunded. With no refund of the gateway's that
// may have been paid (none, or a FAILED one), it was refunded outside it:
// flagged REFUNDED_OUTSIDE (its confirmation was not held, the callback
// having recorded it); with one, nothing is flagged.
func TestRepairRaceWithTheCallbackOfARefundedPayment(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for _, no := range []string{"race-out", "race-own", "race-failed"} {
			if _, err := s.ApplyTransaction(ctx, paid("n-"+no, no, "tx-"+no, 300)); err != nil {
				t.Fatal(err)
			}
		}
		for _, no := range []string{"race-own", "race-failed"} {
			if _, err := s.CreateRefund(ctx, refundReq(no, "rf-"+no, 100)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-race-failed", State: ledger.RefundFailed, Source: ledger.SourceAPI}); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"race-out", "race-own", "race-failed"} {
			if it, err := s.CheckRefundedPaymentAsRead(ctx, billPayment(no, "tx-"+no, 300)); it != nil || err != nil {
				t.Fatalf("%s: item %+v, err %v; want no mismatch", no, it, err)
			}
		}
		for _, no := range []string{"race-out", "race-failed"} { // a FAILED refund of the gateway's paid nothing
			a, _ := s.Anomalies(ctx, no)
			if len(a) != 1 || a[0].Kind != ledger.AnomalyRefundedOutside || !strings.Contains(a[0].Detail, "not held") {
				t.Fatalf("anomalies of %s, refunded outside: %+v, want REFUNDED_OUTSIDE", no, a)
			}
		}
		if a, _ := s.Anomalies(ctx, "race-own"); len(a) != 0 {
			t.Fatalf("anomalies of the payment the gateway refunded: %+v, want none", a)
		}
		// The ledger holds another transaction for the order: a second
		// payment, flagged as such, not a refund outside the gateway.
		if it, err := s.CheckRefundedPaymentAsRead(ctx, billPayment("race-out", "tx-race-second", 300)); err != nil ||
			it == nil || it.Kind != ledger.MismatchPaymentTransaction {
			t.Fatalf("second transaction: item %+v, err %v; want a transaction mismatch", it, err)
		}
		kinds := map[string]int{}
		all, _ := s.Anomalies(ctx, "race-out")
		for _, x := range all {
			kinds[x.Kind] += x.SeenCount
		}
		if kinds[ledger.AnomalyRefundedOutside] != 1 || kinds[ledger.AnomalyDuplicatePayment] != 1 {
			t.Fatalf("after a second transaction: %v, want one DUPLICATE_PAYMENT and the one REFUNDED_OUTSIDE seen once", kinds)
		}
	})
}

// TestReconcileConfirmsRowsBeforeRepairing: a bill row is plain text the
// merchant's product names and attach can add to, so a payment is
// repaired only once WeChat Pay's own answer confirms it. An unconfirmed
// row is reported REFUSED and changes nothing; WeChat Pay not answering
// fails the run, which is retried.
func TestReconcileConfirmsRowsBeforeRepairing(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "cf-victim", AmountTotal: 900, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		real, forged := billPayment("cf-real", "tx-cf-real", 300), billPayment("cf-victim", "tx-cf-forged", 900)
		refundedSince := billPayment("cf-refunded", "tx-cf-refunded", 500)
		confirm := func(_ context.Context, bp ledger.BillPayment) (ledger.Confirmed, error) {
			if bp.OutTradeNo == "cf-victim" {
				return ledger.Confirmed{}, fmt.Errorf("%w: trade_state NOTPAY", ledger.ErrBillUnconfirmed)
			}
			return ledger.Confirmed{Refunded: bp.OutTradeNo == "cf-refunded", PayerTotal: bp.Amount - 20}, nil // a coupon paid 20
		}
		rep := reconcile(t, s, &ledger.Bill{Payments: []ledger.BillPayment{real, forged, refundedSince}, Confirm: confirm})
		if it := item(rep, "cf-real"); it == nil || it.Repair != ledger.RepairApplied {
			t.Fatalf("confirmed row not repaired: %+v", rep.Items)
		}
		if p, err := s.Payment(ctx, "cf-real"); err != nil || p.AmountTotal != 300 || p.PayerTotal != 280 {
			t.Fatalf("repaired payment: %+v, %v; want 300 fen, 280 of them paid by the payer (WeChat Pay's answer)", p, err)
		}
		if jobs, _ := s.Outbox().JobsOf(ctx, "cf-real"); len(jobs) != 1 || jobs[0].State != ledger.JobPending {
			t.Fatalf("repaired payment's stock confirmation: %+v, want it pending", jobs)
		}
		// Refunded since, outside the gateway: recorded, flagged, its stock
		// confirmation held for a person.
		if it := item(rep, "cf-refunded"); it == nil || it.Repair != ledger.RepairApplied || !strings.Contains(it.RepairDetail, "REFUNDED_OUTSIDE") {
			t.Fatalf("confirmed refunded row not repaired: %+v", rep.Items)
		}
		if jobs, _ := s.Outbox().JobsOf(ctx, "cf-refunded"); len(jobs) != 1 || jobs[0].State != ledger.JobDead {
			t.Fatalf("refunded order's stock confirmation: %+v, want it held (dead)", jobs)
		}
		if a, _ := s.Anomalies(ctx, "cf-refunded"); len(a) != 1 || a[0].Kind != ledger.AnomalyRefundedOutside {
			t.Fatalf("refunded order's anomalies: %+v, want REFUNDED_OUTSIDE", a)
		}
		if it := item(rep, "cf-victim"); it == nil || it.Repair != ledger.RepairRefused || !strings.Contains(it.RepairDetail, "NOTPAY") {
			t.Fatalf("unconfirmed row: %+v", rep.Items)
		}
		if p, _ := s.Payment(ctx, "cf-victim"); p.State != ledger.PaymentExpected {
			t.Fatalf("unconfirmed row paid the order: %+v", p)
		}
		down := func(context.Context, ledger.BillPayment) (ledger.Confirmed, error) {
			return ledger.Confirmed{}, errors.New("wechat pay: outcome unknown")
		}
		claim, err := s.ClaimReconciliation(ctx, "2026-11-24", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Reconcile(ctx, claim, &ledger.Bill{Payments: []ledger.BillPayment{billPayment("cf-later", "tx-cf-later", 100)}, Confirm: down}, "test"); err == nil {
			t.Fatal("a run whose confirmation got no answer stored a report")
		}
	})
}

// TestRepairRaceWithAnotherPayment: between the run's read and its repair
// the order is recorded paid by another transaction than the bill's. The
// repair finds it recorded, and the report compares the two: a
// transaction mismatch, not a match.
func TestRepairRaceWithAnotherPayment(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n-race-other", "race-other", "tx-race-first", 300)); err != nil {
			t.Fatal(err)
		}
		it, err := s.CheckPaymentAsRead(ctx, billPayment("race-other", "tx-race-bill", 300))
		if err != nil || it == nil || it.Kind != ledger.MismatchPaymentTransaction {
			t.Fatalf("item %+v, err %v; want a transaction mismatch", it, err)
		}
	})
}

// TestReconcileReadsADayInPages: a day read in pages (each its own
// statement, under the server's statement timeout) is read whole: a
// page size that divides the day's payments and one that does not.
func TestReconcileReadsADayInPages(t *testing.T) {
	for _, page := range []int{2, 5} {
		defer ledger.SetDayPage(page)()
		ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
			bill := &ledger.Bill{}
			for i := range 5 {
				no := fmt.Sprintf("page%d-%d", page, i)
				paidOrder(t, s, no, 100)
				bill.Payments = append(bill.Payments, billPayment(no, "tx-"+no, 100))
			}
			rep := reconcile(t, s, bill)
			if rep.Status != ledger.ReconcileMatched || rep.LedgerPayments != 5 || rep.LedgerPaid != 500 || len(rep.Items) != 0 {
				t.Fatalf("page size %d: %+v", page, rep)
			}
		})
	}
}

// TestReconcileReportsRowsOutOfBounds: a crafted product name can add a
// bill row that parses, and such a row can hold fields of any length. A
// row within WeChat Pay's bounds (32 bytes for out_trade_no and
// transaction_id, 64 for out_refund_no; a refund status the width of
// bill_state) is reconciled as before; one past them, or not UTF-8, is no
// WeChat Pay row: reported BILL_ROW_INVALID, REFUSED, its fields cut
// (rune-safe) to the report's columns and its line kept, never confirmed
// or repaired. The report stores on MySQL's strict sql_mode too, which
// refused it whole before, failing the day on every run; a rerun reports
// the same items.
func TestReconcileReportsRowsOutOfBounds(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		pad := func(prefix string, n int) string { return prefix + strings.Repeat("x", n-len(prefix)) }
		payment := func(name, no, tx string) ledger.BillPayment {
			bp := billPayment(no, tx, 100)
			bp.Line = "`" + name
			return bp
		}
		refund := func(name, no, status string) ledger.BillRefund {
			return ledger.BillRefund{Time: billPayment("", "", 0).Time, TransactionID: "tx-ob", OutTradeNo: "ob-order",
				OutRefundNo: no, Status: status, Amount: 50, Line: "`" + name}
		}
		valid := []ledger.BillPayment{payment("no-32", pad("ob-", 32), "tx-ob-no-32"), payment("tx-32", "ob-tx-32", pad("tx-", 32))}
		invalid := map[string]string{} // line: the field the detail names
		var payments []ledger.BillPayment
		for _, n := range []int{33, 64, 65} {
			no, tx := payment(fmt.Sprint("no-", n), pad("ob-", n), fmt.Sprint("tx-ob-no-", n)), payment(fmt.Sprint("tx-", n), fmt.Sprint("ob-tx-", n), pad("tx-", n))
			invalid[no.Line], invalid[tx.Line] = "out_trade_no", "transaction_id"
			payments = append(payments, no, tx)
		}
		mchid, long := payment("mchid-33", "ob-mchid", "tx-ob-mchid"), payment("line", "ob-line", "tx-ob-line")
		mchid.MchID, long.Line = pad("19", 33), long.Line+strings.Repeat("x", 65536)
		invalid[mchid.Line], invalid[long.Line[:65535]] = "mchid", "line" // bill_line is a TEXT: 65535 bytes
		payments = append(payments, mchid, long)
		validRefunds := []ledger.BillRefund{refund("rf-64", pad("rf-", 64), "SUCCESS"), refund("state-16", "rf-state-16", pad("S", 16))}
		trade := refund("trade-33", "rf-trade-33", "SUCCESS")
		trade.OutTradeNo = pad("ob-", 33)
		refunds := []ledger.BillRefund{refund("rf-65", pad("rf-", 65), "SUCCESS"), refund("rf-cjk", strings.Repeat("退", 22), "SUCCESS"),
			refund("rf-utf8", "rf-\xff", "SUCCESS"), refund("state-17", "rf-state-17", pad("S", 17)), trade}
		for i, field := range []string{"out_refund_no", "out_refund_no", "out_refund_no", "refund status", "out_trade_no"} {
			invalid[refunds[i].Line] = field
		}
		confirmed := map[string]bool{}
		confirm := func(_ context.Context, bp ledger.BillPayment) (ledger.Confirmed, error) {
			confirmed[bp.Line] = true
			return ledger.Confirmed{PayerTotal: bp.Amount}, nil
		}
		bill := &ledger.Bill{Payments: slices.Concat(valid, payments), Refunds: slices.Concat(validRefunds, refunds), Confirm: confirm}

		rep := reconcile(t, s, bill)
		if rep.Repaired != 2 || rep.Mismatches != 4+len(invalid) || rep.BillPayments != 10 || rep.BillRefunds != 7 || len(confirmed) != 2 {
			t.Fatalf("report: %d mismatches, %d repaired, %d/%d bill rows, %d confirmed; want %d, 2, 10/7, 2",
				rep.Mismatches, rep.Repaired, rep.BillPayments, rep.BillRefunds, len(confirmed), 4+len(invalid))
		}
		stored, err := s.Reconciliation(ctx, reconcileDay)
		if err != nil || !reflect.DeepEqual(stored.Items, rep.Items) {
			t.Fatalf("stored report (%v) is not the one returned", err)
		}
		for _, bp := range valid {
			if it := byLine(rep, bp.Line); it == nil || it.Kind != ledger.MismatchPaymentMissingInLedger || it.Repair != ledger.RepairApplied ||
				it.OutTradeNo != bp.OutTradeNo || it.TransactionID != bp.TransactionID || !confirmed[bp.Line] {
				t.Fatalf("payment %s at WeChat Pay's bounds, not repaired: %+v", bp.Line, it)
			}
			assertRepaired(t, s, bp)
		}
		for _, br := range validRefunds {
			if it := byLine(rep, br.Line); it == nil || it.Kind != ledger.MismatchRefundMissingInLedger ||
				it.OutRefundNo != br.OutRefundNo || it.Bill.State != br.Status {
				t.Fatalf("refund %s at the bounds: %+v", br.Line, it)
			}
		}
		for line, field := range invalid {
			it := byLine(rep, line)
			if it == nil || it.Kind != ledger.MismatchBillRowInvalid || it.Repair != ledger.RepairRefused ||
				!strings.Contains(it.RepairDetail, field) || !fitsColumns(*it) {
				t.Fatalf("row %.20s: %+v, want BILL_ROW_INVALID, REFUSED, naming %s, within the columns", line, it, field)
			}
		}
		for _, bp := range payments {
			if _, err := s.Payment(ctx, bp.OutTradeNo); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("row %.20s repaired: %v", bp.Line, err)
			}
		}
		cut := map[string]string{"`no-65": pad("ob-", 64), "`tx-65": pad("tx-", 64), "`rf-65": pad("rf-", 64),
			"`rf-cjk": strings.Repeat("退", 21), "`rf-utf8": "rf-\uFFFD", "`state-17": pad("S", 16)}
		for line, want := range cut {
			it := byLine(rep, line)
			if got := it.OutTradeNo + "|" + it.TransactionID + "|" + it.OutRefundNo + "|" + it.Bill.State; !strings.Contains(got, want) {
				t.Fatalf("row %s stored as %s, want %s in it", line, got, want)
			}
		}

		again := reconcile(t, s, bill)
		if again.Mismatches != rep.Mismatches || again.Repaired != 2 {
			t.Fatalf("rerun: %d mismatches, %d repaired; want %d, 2", again.Mismatches, again.Repaired, rep.Mismatches)
		}
	})
}

// TestReconcileNeverAsksAboutOrdersWeChatPayCannotHave: a row naming an
// out_trade_no WeChat Pay never issues (shorter than 6, or a character
// other than A-Z a-z 0-9 _ - | *: a crafted product name's) is
// BILL_ROW_INVALID and never looked up. WeChat Pay refuses such a query
// (400 PARAM_ERROR, signed), which fails the run; every run of the day
// failed on it, and no payment after it in the bill was ever repaired.
func TestReconcileNeverAsksAboutOrdersWeChatPayCannotHave(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		short, spaced := billPayment("ab123", "tx-short", 100), billPayment("ab c123", "tx-spaced", 100)
		lost := billPayment("lost-after", "tx-lost-after", 300)
		asked := map[string]bool{}
		confirm := func(_ context.Context, bp ledger.BillPayment) (ledger.Confirmed, error) {
			asked[bp.OutTradeNo] = true
			if bp.OutTradeNo != lost.OutTradeNo {
				return ledger.Confirmed{}, errors.New("wechatpay: 400 PARAM_ERROR: 商户订单号格式错误")
			}
			return ledger.Confirmed{PayerTotal: bp.Amount}, nil
		}
		rep := reconcile(t, s, &ledger.Bill{Payments: []ledger.BillPayment{short, spaced, lost}, Confirm: confirm})
		for _, bp := range []ledger.BillPayment{short, spaced} {
			if it := item(rep, bp.OutTradeNo); it == nil || it.Kind != ledger.MismatchBillRowInvalid ||
				it.Repair != ledger.RepairRefused || !strings.Contains(it.RepairDetail, "out_trade_no") || asked[bp.OutTradeNo] {
				t.Fatalf("row %q: %+v (asked WeChat Pay: %v), want BILL_ROW_INVALID, not looked up", bp.OutTradeNo, it, asked[bp.OutTradeNo])
			}
		}
		if it := item(rep, lost.OutTradeNo); it == nil || it.Repair != ledger.RepairApplied {
			t.Fatalf("lost payment after them: %+v", rep.Items)
		}
		assertRepaired(t, s, lost)
	})
}

// TestReconcileSecondRowOfAnOrder: a bill naming one order's payment
// twice (only a crafted bill does) repairs the lost payment once, reports
// it repaired once, and the second row BILL_ROW_INVALID, never looked up.
func TestReconcileSecondRowOfAnOrder(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		first := billPayment("twice-1", "tx-twice-1", 300)
		second := first
		second.Line = "`second line of twice-1"
		asked := 0
		confirm := func(_ context.Context, bp ledger.BillPayment) (ledger.Confirmed, error) {
			asked++
			return ledger.Confirmed{PayerTotal: bp.Amount}, nil
		}
		rep := reconcile(t, s, &ledger.Bill{Payments: []ledger.BillPayment{first, second}, Confirm: confirm})
		if rep.Repaired != 1 || asked != 1 {
			t.Fatalf("repaired %d, asked WeChat Pay %d times; want 1 and 1: %+v", rep.Repaired, asked, rep.Items)
		}
		if it := byLine(rep, second.Line); it == nil || it.Kind != ledger.MismatchBillRowInvalid || it.Repair != ledger.RepairRefused {
			t.Fatalf("second row: %+v, want BILL_ROW_INVALID, refused", it)
		}
		assertRepaired(t, s, first)
	})
}

// byLine finds the item of the bill row whose stored line is line.
func byLine(rep *ledger.Reconciliation, line string) *ledger.ReconcileItem {
	for i, it := range rep.Items {
		if it.Bill != nil && it.Bill.Line == line {
			return &rep.Items[i]
		}
	}
	return nil
}

// fitsColumns reports whether the item's text fits reconciliation_items on
// MySQL (migration 0033) as valid UTF-8.
func fitsColumns(it ledger.ReconcileItem) bool {
	for _, f := range []struct {
		v     string
		width int
	}{{it.OutTradeNo, 64}, {it.TransactionID, 64}, {it.OutRefundNo, 64}, {it.Bill.State, 16}, {it.RepairDetail, 512}} {
		if utf8.RuneCountInString(f.v) > f.width || !utf8.ValidString(f.v) {
			return false
		}
	}
	return true
}
