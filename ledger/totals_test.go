package ledger_test

import (
	"context"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestTotalsAgreeWithTheLists: the daily totals of a mixed ledger (partial,
// failed, closed, abnormal refunds, a late success of a failed one, a
// closed order paid after all) are the sums, per business day (UTC+8) of
// success_time, of the SUCCESS rows the finance lists show, around a day
// boundary (16:00 UTC); and each payment's refunded_total is its refunds
// not CLOSED or FAILED.
func TestTotalsAgreeWithTheLists(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		boundary := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC) // 2026-11-24 00:00 in China
		clock := boundary.Add(-time.Hour)
		s = s.WithClock(func() time.Time { return clock })
		pay := func(no string, amount int64, at time.Time) {
			t.Helper()
			u := paid("n-"+no, no, "tx-"+no, amount)
			u.SuccessTime = at
			if _, err := s.ApplyTransaction(ctx, u); err != nil {
				t.Fatalf("pay %s: %v", no, err)
			}
		}
		refund := func(no, refundNo string, amount int64, moves ...ledger.RefundUpdate) {
			t.Helper()
			if _, err := s.CreateRefund(ctx, refundReq(no, refundNo, amount)); err != nil {
				t.Fatalf("refund %s: %v", refundNo, err)
			}
			for _, u := range moves {
				u.OutRefundNo = refundNo
				if u.Source == "" {
					u.Source = ledger.SourceQuery
				}
				if _, err := s.ApplyRefund(ctx, u); err != nil {
					t.Fatalf("refund %s → %s: %v", refundNo, u.State, err)
				}
			}
		}
		to := func(st ledger.RefundState, at time.Time) ledger.RefundUpdate {
			return ledger.RefundUpdate{State: st, SuccessTime: at}
		}
		last := boundary.Add(-time.Microsecond)
		pay("t1", 1000, last)
		pay("t2", 500, boundary)
		refund("t1", "t1-a", 300, to(ledger.RefundSuccess, last))
		refund("t1", "t1-b", 200, to(ledger.RefundFailed, time.Time{}))
		refund("t1", "t1-c", 100, to(ledger.RefundProcessing, time.Time{}), to(ledger.RefundClosed, time.Time{}))
		refund("t1", "t1-d", 150, to(ledger.RefundAbnormal, time.Time{}))
		refund("t1", "t1-e", 120, to(ledger.RefundAbnormal, time.Time{}), to(ledger.RefundSuccess, boundary))
		refund("t2", "t2-a", 500, to(ledger.RefundFailed, time.Time{}), to(ledger.RefundSuccess, boundary.Add(time.Hour)))
		// A closed order paid after all, and one closed for good.
		for _, no := range []string{"t3", "t4"} {
			if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 700, PayerOpenID: "openid-1",
				ExpireAt: clock.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		clock = boundary.Add(time.Minute)
		for _, no := range []string{"t3", "t4"} {
			if _, err := s.CloseExpired(ctx, no, ledger.SourceJanitor, ""); err != nil {
				t.Fatal(err)
			}
		}
		pay("t3", 700, boundary.Add(2*time.Minute))
		refund("t3", "t3-a", 50, to(ledger.RefundProcessing, time.Time{}))
		refund("t3", "t3-b", 60) // CREATED, with the clock after the boundary
		refund("t3", "t3-c", 70, to(ledger.RefundSuccess, time.Time{}))
		// Registered, never paid.
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "t5", AmountTotal: 900, PayerOpenID: "openid-1",
			ExpireAt: clock.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}

		want := map[string]*ledger.DayTotal{}
		day := func(at time.Time) *ledger.DayTotal {
			d := ledger.DayOf(at)
			if want[d] == nil {
				want[d] = &ledger.DayTotal{Day: d}
			}
			return want[d]
		}
		reserved := map[string]int64{}
		err := s.EachRefund(ctx, ledger.ListQuery{}, func(r ledger.RefundListItem) error {
			if r.State != string(ledger.RefundClosed) && r.State != string(ledger.RefundFailed) {
				reserved[r.OutTradeNo] += r.Amount
			}
			if r.State == string(ledger.RefundSuccess) {
				d := day(*r.SuccessTime)
				d.RefundCount++
				d.Refunded += r.Amount
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = s.EachPayment(ctx, ledger.ListQuery{}, func(p ledger.PaymentListItem) error {
			if p.RefundedTotal != reserved[p.OutTradeNo] {
				t.Errorf("payment %s: refunded_total %d, its refunds not CLOSED/FAILED sum to %d", p.OutTradeNo,
					p.RefundedTotal, reserved[p.OutTradeNo])
			}
			if p.State == ledger.PaymentSuccess {
				d := day(*p.SuccessTime)
				d.PaidCount++
				d.Paid += p.AmountTotal
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		days, err := s.DailyTotals(ctx, "2026-11-22", "2026-11-25")
		if err != nil {
			t.Fatal(err)
		}
		for _, got := range days {
			w := ledger.DayTotal{Day: got.Day}
			if want[got.Day] != nil {
				w = *want[got.Day]
			}
			w.Net = w.Paid - w.Refunded
			if got != w {
				t.Errorf("totals of %s: %+v, the lists sum to %+v", got.Day, got, w)
			}
			delete(want, got.Day)
		}
		if len(want) != 0 {
			t.Errorf("days in the lists outside the totals: %v", want)
		}
		// The fixed points, so that a list and the totals cannot agree on
		// the wrong day.
		if days[1].Paid != 1000 || days[1].Refunded != 300 || days[2].Paid != 1200 || days[2].Refunded != 690 ||
			days[2].RefundCount != 3 {
			t.Errorf("totals: %+v", days)
		}
	})
}
