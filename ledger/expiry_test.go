package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// rowCounts counts an order's payments and history rows.
func rowCounts(t *testing.T, s *ledger.Store, no string) [2]int64 {
	t.Helper()
	var out [2]int64
	for i, table := range []string{"payments", "state_history"} {
		if err := s.DB().Table(table).Where("out_trade_no = ?", no).Count(&out[i]).Error; err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestRetryAfterExpireAtAnswersTheStoredOrder (review 4): registering an
// order again with the same amount and payer answers the stored order
// (ErrAlreadyRecorded, the first expire_at standing) even once that
// expire_at has passed, and after the compensation closed the order; other
// values are a conflict. Only an order the call would register must
// expire after now: a new one, or one a callback recorded unregistered,
// is refused with ErrExpireAtPassed and nothing is written.
func TestRetryAfterExpireAtAnswersTheStoredOrder(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		at := func(d time.Duration) *ledger.Store { return s.WithClock(func() time.Time { return t0.Add(d) }) }
		expire := t0.Add(time.Hour)
		o := ledger.Order{OutTradeNo: "demo-1", AmountTotal: 250, PayerOpenID: "o-demo", ExpireAt: expire}
		first, err := at(0).RegisterOrderBeforeExpiry(ctx, o)
		if err != nil || first.ExpireAt == nil || !first.ExpireAt.Equal(expire) {
			t.Fatalf("first registration: %+v, %v", first, err)
		}
		later := o
		later.ExpireAt = t0.Add(3 * time.Hour) // a retry rebuilt with a new deadline: the first stands
		for name, retry := range map[string]ledger.Order{"same body": o, "later expire_at": later} {
			for _, when := range []time.Duration{time.Hour, 2 * time.Hour} {
				p, err := at(when).RegisterOrderBeforeExpiry(ctx, retry)
				if !errors.Is(err, ledger.ErrAlreadyRecorded) || p == nil || !p.ExpireAt.Equal(expire) || p.ExpectedAmount != 250 {
					t.Fatalf("%s at T+%v: %+v, %v; want the stored order (expire_at %v) with ErrAlreadyRecorded", name, when, p, err, expire)
				}
			}
		}
		other := o
		other.AmountTotal = 251
		if _, err := at(2*time.Hour).RegisterOrderBeforeExpiry(ctx, other); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("other amount after expire_at: %v, want ErrConflict", err)
		}
		if _, err := at(2*time.Hour).CloseExpired(ctx, "demo-1", ledger.SourceQuery, "query:expired"); err != nil {
			t.Fatalf("close: %v", err)
		}
		p, err := at(3*time.Hour).RegisterOrderBeforeExpiry(ctx, o)
		if !errors.Is(err, ledger.ErrAlreadyRecorded) || p.State != ledger.PaymentClosed {
			t.Fatalf("retry of the closed order: %+v, %v; want it CLOSED with ErrAlreadyRecorded", p, err)
		}
		if got := rowCounts(t, s, "demo-1"); got != [2]int64{1, 2} {
			t.Fatalf("demo-1 payments/history = %v, want [1 2]", got)
		}

		for _, when := range []time.Duration{0, time.Minute} { // at expire_at, and after it
			past := ledger.Order{OutTradeNo: "demo-2", AmountTotal: 100, ExpireAt: t0}
			if p, err := at(when).RegisterOrderBeforeExpiry(ctx, past); !errors.Is(err, ledger.ErrExpireAtPassed) {
				t.Fatalf("new order with expire_at T at T+%v: %+v, %v; want ErrExpireAtPassed", when, p, err)
			}
		}
		if got := rowCounts(t, s, "demo-2"); got != [2]int64{} {
			t.Fatalf("refused new order left rows %v", got)
		}

		// Paid before it was registered: the registration is a first one.
		u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-demo-3", Source: ledger.SourceCallback,
			EventType: "TRANSACTION.SUCCESS", OutTradeNo: "demo-3", TransactionID: "tx-demo-3"},
			OutTradeNo: "demo-3", TransactionID: "tx-demo-3", TradeState: "SUCCESS", PayerOpenID: "o-3",
			AmountTotal: 100, PayerTotal: 100, Currency: "CNY"}
		if _, err := s.ApplyTransaction(ctx, u); err != nil {
			t.Fatal(err)
		}
		before, err := s.Payment(ctx, "demo-3")
		if err != nil {
			t.Fatal(err)
		}
		late := ledger.Order{OutTradeNo: "demo-3", AmountTotal: 100, PayerOpenID: "o-3", ExpireAt: s.Now().Add(-time.Minute)}
		if _, err := s.RegisterOrderBeforeExpiry(ctx, late); !errors.Is(err, ledger.ErrExpireAtPassed) {
			t.Fatalf("first registration of a paid order with a past expire_at: %v, want ErrExpireAtPassed", err)
		}
		after, err := s.Payment(ctx, "demo-3")
		if err != nil || after.Registered || after.Version != before.Version || after.ExpireAt != nil {
			t.Fatalf("refused registration changed the paid order: %+v -> %+v (%v)", before, after, err)
		}
		late.ExpireAt = s.Now().Add(time.Hour)
		if p, err := s.RegisterOrderBeforeExpiry(ctx, late); err != nil || !p.Registered {
			t.Fatalf("with a future expire_at: %+v, %v", p, err)
		}
	})
}
