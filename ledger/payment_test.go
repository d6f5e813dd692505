package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

func paid(notifyID, outTradeNo, txID string, amount int64) ledger.TransactionUpdate {
	return ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: notifyID, Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS",
			ResourceType: "encrypt-resource", OutTradeNo: outTradeNo, TransactionID: txID, Plaintext: "{}"},
		OutTradeNo: outTradeNo, TransactionID: txID, TradeState: "SUCCESS", AppID: "wxapp", MchID: "1900000001",
		PayerOpenID: "openid-1", AmountTotal: amount, PayerTotal: amount, Currency: "CNY",
		SuccessTime: time.Date(2026, 11, 23, 1, 2, 3, 0, time.UTC),
	}
}

func TestApplyTransactionRecordsOnce(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		p, err := s.ApplyTransaction(ctx, paid("n1", "o1", "tx1", 100))
		if err != nil {
			t.Fatalf("first apply: %v", err)
		}
		if p.State != ledger.PaymentSuccess || p.AmountTotal != 100 || p.TransactionID != "tx1" {
			t.Fatalf("payment = %+v", p)
		}
		if _, err := s.ApplyTransaction(ctx, paid("n1", "o1", "tx1", 100)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("same notice again: err = %v, want ErrAlreadyRecorded", err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("n2", "o1", "tx1", 100)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("other notice for paid order: err = %v, want ErrAlreadyRecorded", err)
		}
		assertCounts(t, s, "o1", 1, 1)
	})
}

// TestPaymentWithoutSuccessTime: a paid answer without a success_time is
// recorded at the notice's create_time, so it is in that day's totals
// (and reconciliation), not in none.
func TestPaymentWithoutSuccessTime(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		u := paid("n-no-time", "o-no-time", "tx-no-time", 100)
		u.SuccessTime = time.Time{}
		u.Notice.CreateTime = time.Date(2026, 11, 23, 1, 2, 4, 0, time.UTC) // 09:02 on the 23rd in China
		p, err := s.ApplyTransaction(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if p.SuccessTime == nil || !p.SuccessTime.Equal(u.Notice.CreateTime) {
			t.Fatalf("success_time %v, want the notice's create_time %v", p.SuccessTime, u.Notice.CreateTime)
		}
		days, err := s.DailyTotals(ctx, "2026-11-23", "2026-11-23")
		if err != nil {
			t.Fatal(err)
		}
		if len(days) != 1 || days[0].PaidCount != 1 || days[0].Paid != 100 {
			t.Fatalf("totals of 2026-11-23: %+v, want the payment in them", days)
		}
	})
}

func TestRegisteredOrderLifecycle(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "o2", AmountTotal: 500, PayerOpenID: "openid-1", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatalf("register: %v", err)
		}
		if _, err := s.RegisterOrder(ctx, order); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("register again: err = %v, want ErrAlreadyRecorded", err)
		}
		changed := order
		changed.AmountTotal = 501
		if _, err := s.RegisterOrder(ctx, changed); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("register with other amount: err = %v, want ErrConflict", err)
		}
		p, err := s.ApplyTransaction(ctx, paid("n3", "o2", "tx3", 500))
		if err != nil || p.State != ledger.PaymentSuccess || !p.Registered {
			t.Fatalf("pay registered order: p=%+v err=%v", p, err)
		}
		h, _ := s.History(ctx, "o2")
		if len(h) != 2 || h[0].To != "EXPECTED" || h[1].From != "EXPECTED" || h[1].To != "SUCCESS" || h[1].Ref != "n3" {
			t.Fatalf("history = %+v", h)
		}
	})
}

// TestRetriedRegistrationAfterThePayment: a registration retried after
// the payment's callback filled in the payer (the business lost the first
// answer, or the callback came first) is the same registration, whatever
// openid the payer has; only another amount or another registered openid
// is a conflict.
func TestRetriedRegistrationAfterThePayment(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		expire := time.Now().Add(time.Hour)
		first := ledger.Order{OutTradeNo: "o41", AmountTotal: 500, ExpireAt: expire}
		if _, err := s.RegisterOrder(ctx, first); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("n41", "o41", "tx41", 500)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RegisterOrder(ctx, first); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("registration without openid retried after the payment: err = %v, want ErrAlreadyRecorded", err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("n42", "o42", "tx42", 300)); err != nil {
			t.Fatal(err)
		}
		late := ledger.Order{OutTradeNo: "o42", AmountTotal: 300, PayerOpenID: "openid-9", ExpireAt: expire}
		if _, err := s.RegisterOrder(ctx, late); err != nil {
			t.Fatalf("registration after the callback: %v", err)
		}
		if _, err := s.RegisterOrder(ctx, late); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("late registration retried: err = %v, want ErrAlreadyRecorded", err)
		}
		other := late
		other.PayerOpenID = "openid-1"
		if _, err := s.RegisterOrder(ctx, other); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("registration with another openid: err = %v, want ErrConflict", err)
		}
		if p, _ := s.Payment(ctx, "o42"); p.PayerOpenID != "openid-1" {
			t.Fatalf("payer = %q, want the callback's openid-1 kept", p.PayerOpenID)
		}
	})
}

// TestLateRegistrationWithOtherAmountIsFlagged: a callback recorded the
// order first (so its stock was confirmed); registering it later with
// another amount is refused and flagged for finance, and changes nothing.
func TestLateRegistrationWithOtherAmountIsFlagged(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n30", "o30", "tx30", 100)); err != nil {
			t.Fatal(err)
		}
		order := ledger.Order{OutTradeNo: "o30", AmountTotal: 500, ExpireAt: time.Now().Add(time.Hour)}
		var mm *ledger.AmountMismatchError
		if _, err := s.RegisterOrder(ctx, order); !errors.As(err, &mm) || mm.Expected != 500 || mm.Got != 100 {
			t.Fatalf("register: err = %v, want AmountMismatchError 500/100", err)
		}
		if p, _ := s.Payment(ctx, "o30"); p.Registered || p.State != ledger.PaymentSuccess {
			t.Fatalf("payment after a refused registration = %+v", p)
		}
		a, _ := s.Anomalies(ctx, "o30")
		if len(a) != 1 || a[0].Kind != ledger.AnomalyAmountMismatch || a[0].Ref != "register:o30" {
			t.Fatalf("anomalies = %+v, want one AMOUNT_MISMATCH", a)
		}
	})
}

// TestOtherCurrencyAppliesNothing: the ledger keeps fen of CNY. A payment
// stated in another currency is refused (unlike one of another amount in
// CNY, see TestOtherAmountIsRecordedAndHeld), for a registered order and
// an unknown one alike: flagged, nothing applied, no fulfilment; a
// currency string longer than the column is no error of the database's.
func TestOtherCurrencyAppliesNothing(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "oc1", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatalf("register: %v", err)
		}
		for _, tc := range []struct{ no, currency string }{{"oc1", "USD"}, {"oc2", "HKD"}, {"oc3", strings.Repeat("X", 40)}} {
			u := paid("n-"+tc.no, tc.no, "tx-"+tc.no, 100)
			u.Currency = tc.currency
			_, err := s.ApplyTransaction(ctx, u)
			var mm *ledger.AmountMismatchError
			if !errors.As(err, &mm) || mm.Currency == "" || !strings.HasPrefix(tc.currency, mm.Currency) {
				t.Fatalf("%s in %.8s: err = %v, want a currency mismatch", tc.no, tc.currency, err)
			}
			a, _ := s.Anomalies(ctx, tc.no)
			if len(a) != 1 || a[0].Kind != ledger.AnomalyAmountMismatch || a[0].Ref != "paid:tx-"+tc.no {
				t.Fatalf("%s: anomalies = %+v, want one AMOUNT_MISMATCH", tc.no, a)
			}
		}
		if p, _ := s.Payment(ctx, "oc1"); p == nil || p.State != ledger.PaymentExpected {
			t.Fatalf("registered order = %+v, want EXPECTED", p)
		}
		assertCounts(t, s, "oc1", 1, 0) // only the registration
		for _, no := range []string{"oc2", "oc3"} {
			if _, err := s.Payment(ctx, no); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("%s: err = %v, want not found", no, err)
			}
			assertCounts(t, s, no, 0, 0)
		}
		u := paid("n-oc1-cny", "oc1", "tx-oc1", 100)
		if p, err := s.ApplyTransaction(ctx, u); err != nil || p.State != ledger.PaymentSuccess || p.Currency != "CNY" {
			t.Fatalf("the same order in CNY: %+v, %v", p, err)
		}
	})
}

func TestIllegalAndNonFinalStates(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n5", "o5", "tx5", 100)); err != nil {
			t.Fatal(err)
		}
		closed := paid("n6", "o5", "tx5", 100)
		closed.TradeState = "CLOSED"
		if _, err := s.ApplyTransaction(ctx, closed); !errors.Is(err, ledger.ErrIllegalTransition) {
			t.Fatalf("SUCCESS→CLOSED: err = %v, want ErrIllegalTransition", err)
		}
		notPaid := paid("n7", "o6", "", 100)
		notPaid.TradeState = "NOTPAY"
		if _, err := s.ApplyTransaction(ctx, notPaid); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("NOTPAY: err = %v, want ErrNoChange", err)
		}
		assertCounts(t, s, "o5", 1, 1)
		assertCounts(t, s, "o6", 0, 0)
	})
}

func TestDuplicatePaymentIsFlagged(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n8", "o8", "tx8", 100)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("n9", "o8", "tx9", 100)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("err = %v", err)
		}
		a, _ := s.Anomalies(ctx, "o8")
		if len(a) != 1 || a[0].Kind != ledger.AnomalyDuplicatePayment || !strings.Contains(a[0].Detail, "tx9: 100 fen") ||
			!strings.Contains(a[0].Detail, "notify n9") {
			t.Fatalf("anomalies = %+v; want the second payment's amount and notice named", a)
		}
	})
}

// TestDuplicatePaymentNamesItsCurrency: a second payment of an order
// already paid, stated in another currency than CNY, is flagged
// DUPLICATE_PAYMENT naming that currency: its flag is the only record of
// it (the notice rolls back), and "500 fen" would tell finance to refund
// 5 yuan of what was 5 dollars.
func TestDuplicatePaymentNamesItsCurrency(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n-dc1", "o-dc", "tx-dc1", 100)); err != nil {
			t.Fatal(err)
		}
		usd := paid("n-dc2", "o-dc", "tx-dc2", 500)
		usd.Currency = "USD"
		if _, err := s.ApplyTransaction(ctx, usd); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("err = %v", err)
		}
		a, _ := s.Anomalies(ctx, "o-dc")
		if len(a) != 1 || a[0].Kind != ledger.AnomalyDuplicatePayment || !strings.Contains(a[0].Detail, "tx-dc2: 500 in USD") ||
			strings.Contains(a[0].Detail, "fen") {
			t.Fatalf("anomalies = %+v; want the second payment's amount in USD, not in fen", a)
		}
		if p, _ := s.Payment(ctx, "o-dc"); p.AmountTotal != 100 || p.Currency != "CNY" || p.TransactionID != "tx-dc1" {
			t.Fatalf("payment = %+v, want the first one as it was", p)
		}
	})
}

// TestConcurrentCallbacks fires the same notice and distinct notices for
// one order from many goroutines: one payment, one history row.
func TestConcurrentCallbacks(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		// All 100 wait on start, so the callbacks overlap instead of running
		// one after another as the goroutines happen to be scheduled.
		var wg, ready sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, 100)
		for i := 0; i < 100; i++ {
			wg.Add(1)
			ready.Add(1)
			go func(i int) {
				defer wg.Done()
				ready.Done()
				<-start
				id := "same"
				if i%2 == 0 {
					id = fmt.Sprintf("n-%d", i)
				}
				_, err := s.ApplyTransaction(ctx, paid(id, "oc", "txc", 100))
				if err != nil && !errors.Is(err, ledger.ErrAlreadyRecorded) {
					errs <- err
				}
			}(i)
		}
		ready.Wait()
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent apply: %v", err)
		}
		assertCounts(t, s, "oc", 1, 1)
	})
}

func assertCounts(t *testing.T, s *ledger.Store, outTradeNo string, history, notices int) {
	t.Helper()
	ctx := context.Background()
	h, err := s.History(ctx, outTradeNo)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != history {
		t.Fatalf("history rows for %s = %d, want %d: %+v", outTradeNo, len(h), history, h)
	}
	n, err := s.Notices(ctx, outTradeNo)
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != notices {
		t.Fatalf("notifications for %s = %d, want %d", outTradeNo, len(n), notices)
	}
}

// TestUnflaggedAnomalyIsNotAnsweredAsDone: when the flag of a second
// payment of an order (the only record of it) or of a late refund status
// cannot be written, the update fails, so the notification is not answered
// 2xx; its redelivery is then flagged.
func TestUnflaggedAnomalyIsNotAnsweredAsDone(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n20", "o20", "tx20", 100)); err != nil {
			t.Fatal(err)
		}
		paidOrder(t, s, "o21", 100)
		if _, err := s.CreateRefund(ctx, refundReq("o21", "rf-21", 100)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-21", State: ledger.RefundClosed, Source: ledger.SourceQuery}); err != nil {
			t.Fatal(err)
		}
		late := ledger.RefundUpdate{OutRefundNo: "rf-21", State: ledger.RefundSuccess, Source: ledger.SourceCallback,
			Notice: &ledger.Notice{NotifyID: "rn-21", Source: ledger.SourceCallback, EventType: "REFUND.SUCCESS",
				OutTradeNo: "o21", OutRefundNo: "rf-21", Plaintext: "{}"}}
		if err := s.RenameTable(ctx, "anomalies", "anomalies_away"); err != nil {
			t.Fatal(err)
		}
		_, payErr := s.ApplyTransaction(ctx, paid("n22", "o20", "tx22", 100))
		_, refundErr := s.ApplyRefund(ctx, late)
		if err := s.RenameTable(ctx, "anomalies_away", "anomalies"); err != nil {
			t.Fatal(err)
		}
		for name, err := range map[string]error{"second payment": payErr, "late refund status": refundErr} {
			if err == nil || errors.Is(err, ledger.ErrAlreadyRecorded) || errors.Is(err, ledger.ErrNoChange) {
				t.Fatalf("%s without its flag: err = %v, want a failure", name, err)
			}
		}
		if _, err := s.ApplyTransaction(ctx, paid("n22", "o20", "tx22", 100)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("redelivered second payment: err = %v", err)
		}
		if _, err := s.ApplyRefund(ctx, late); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("redelivered late refund status: err = %v", err)
		}
		for order, kind := range map[string]string{"o20": ledger.AnomalyDuplicatePayment, "o21": ledger.AnomalyStaleRefundStatus} {
			if a, _ := s.Anomalies(ctx, order); len(a) != 1 || a[0].Kind != kind {
				t.Fatalf("anomalies of %s = %+v, want one %s", order, a, kind)
			}
		}
	})
}

// TestPaymentFirstSeenRefundedIsFlagged: the lost-callback check finds an
// order paid and already refunded at WeChat Pay (trade_state REFUND), by
// no refund of the gateway. The payment is recorded and flagged once for
// a person; its stock confirmation is held (dead, never attempted) until
// that person replays it, and a replay queues it. A plain SUCCESS raises no
// such flag and its confirmation is queued at once.
func TestPaymentFirstSeenRefundedIsFlagged(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		u := paid("query:tx-ro", "o-ro", "tx-ro", 100)
		u.TradeState, u.Notice.Source = "REFUND", ledger.SourceQuery
		p, err := s.ApplyTransaction(ctx, u)
		if err != nil || p.State != ledger.PaymentSuccess {
			t.Fatalf("apply REFUND: %+v, %v; want SUCCESS", p, err)
		}
		jobs, err := s.Outbox().JobsOf(ctx, "o-ro")
		if err != nil || len(jobs) != 1 || jobs[0].Kind != ledger.JobConfirmInventory || jobs[0].State != ledger.JobDead ||
			jobs[0].Attempts != 0 || !strings.HasPrefix(jobs[0].LastError, "held:") {
			t.Fatalf("jobs %+v (%v), want the confirmation held dead, never attempted", jobs, err)
		}
		if j, err := s.Outbox().Replay(ctx, jobs[0].ID, "ops:test"); err != nil || j.State != ledger.JobPending {
			t.Fatalf("replay the held confirmation: %+v %v", j, err)
		}
		a, err := s.Anomalies(ctx, "o-ro")
		if err != nil || len(a) != 1 || a[0].Kind != ledger.AnomalyRefundedOutside || a[0].Ref != "refunded:o-ro" {
			t.Fatalf("anomalies %+v (%v), want one REFUNDED_OUTSIDE", a, err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("n-plain", "o-plain", "tx-plain", 100)); err != nil {
			t.Fatal(err)
		}
		if a, _ := s.Anomalies(ctx, "o-plain"); len(a) != 0 {
			t.Fatalf("a plain payment flagged %+v", a)
		}
		if jobs, _ := s.Outbox().JobsOf(ctx, "o-plain"); len(jobs) != 1 || jobs[0].State != ledger.JobPending {
			t.Fatalf("a plain payment's jobs %+v, want its confirmation pending", jobs)
		}
	})
}

// TestConcurrentRegistrationsOfANewOrder: the same new order registered
// twice at once (a client retrying in parallel). On MySQL both read "no
// such order" (READ COMMITTED takes no gap lock) and the second insert
// meets the unique key: it must answer "already registered", not fail.
func TestConcurrentRegistrationsOfANewOrder(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, 200)
		for i := range 100 {
			o := ledger.Order{OutTradeNo: fmt.Sprintf("twin-%03d", i), AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}
			for range 2 {
				wg.Go(func() {
					<-start
					_, err := s.RegisterOrder(ctx, o)
					errs <- err
				})
			}
		}
		close(start)
		wg.Wait()
		close(errs)
		created := 0
		for err := range errs {
			switch {
			case err == nil:
				created++
			case !errors.Is(err, ledger.ErrAlreadyRecorded):
				t.Fatalf("twin registration: %v, want success or already recorded", err)
			}
		}
		if created != 100 {
			t.Fatalf("%d registrations created an order, want 100", created)
		}
	})
}

// TestHistoryRowTwiceIsRefused: a second history row for a state the
// payment already entered (a transition applied twice, however it got
// past the row lock and the state machine) is refused by the database.
func TestHistoryRowTwiceIsRefused(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("n-h2", "h2-order", "tx-h2", 100)); err != nil {
			t.Fatal(err)
		}
		row := map[string]any{"entity": ledger.EntityPayment, "entity_key": "h2-order", "out_trade_no": "h2-order",
			"from_state": "", "to_state": string(ledger.PaymentSuccess), "source": ledger.SourceQuery, "created_at": time.Now()}
		err := s.DB().WithContext(ctx).Table("state_history").Create(row).Error
		if !errors.Is(err, gorm.ErrDuplicatedKey) {
			t.Fatalf("a second SUCCESS row: %v, want a duplicate key", err)
		}
		if h, err := s.History(ctx, "h2-order"); err != nil || len(h) != 1 {
			t.Fatalf("history: %+v, %v; want one row", h, err)
		}
	})
}

// TestLongNoticeSummaryIsCut: a query's trade_state_desc may hold 256
// characters, one more than the notice's summary column: the payment is
// recorded with the summary cut (on a strict MySQL it was refused, and
// the paid order never recorded from its query).
func TestLongNoticeSummaryIsCut(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		u := paid("query:tx-long", "o-long", "tx-long", 100)
		u.Notice.Source, u.Notice.Summary = ledger.SourceQuery, strings.Repeat("支", 256)
		u.Notice.ResourceType = strings.Repeat("r", 40)
		if _, err := s.ApplyTransaction(context.Background(), u); err != nil {
			t.Fatalf("apply with a 256-character summary: %v", err)
		}
		ns, err := s.Notices(context.Background(), "o-long")
		if err != nil || len(ns) != 1 {
			t.Fatalf("notices: %v %v", ns, err)
		}
		if got := ns[0].Summary; !strings.HasPrefix(u.Notice.Summary, got) || len(got) > 255 || len(got) < 250 {
			t.Errorf("stored summary of %d bytes, want the first 255 bytes' whole characters", len(got))
		}
	})
}

// TestNoticeNotUTF8IsRecorded: a decrypted resource whose strings hold
// bytes that are not UTF-8 decodes (Go's JSON decoder reads them as
// U+FFFD), and its notice is stored with each run of such bytes replaced
// by one U+FFFD, in a batch too: on a strict MySQL the raw text was
// refused, and the payment never recorded, every redelivery answered 500.
func TestNoticeNotUTF8IsRecorded(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		one := paid("n-utf8-1", "o-utf8-1", "tx-utf8-1", 100)
		one.Notice.Plaintext = "{\"attach\":\"\xff\xfe\",\"out_trade_no\":\"o-utf8-1\"}"
		if _, err := s.ApplyTransaction(ctx, one); err != nil {
			t.Fatalf("apply: %v", err)
		}
		two := paid("n-utf8-2", "o-utf8-2", "tx-utf8-2", 100)
		two.Notice.Plaintext = "{\"attach\":\"a\xc3\"}"
		three := paid("n-utf8-3", "o-utf8-3", "tx-utf8-3", 100)
		if errs, batched := s.ApplyTransactions(ctx, []ledger.TransactionUpdate{two, three}); errs[0] != nil || errs[1] != nil || !batched {
			t.Fatalf("apply in a batch: %v (batched %v)", errs, batched)
		}
		for no, want := range map[string]string{"o-utf8-1": "{\"attach\":\"\uFFFD\",\"out_trade_no\":\"o-utf8-1\"}",
			"o-utf8-2": "{\"attach\":\"a\uFFFD\"}"} {
			ns, err := s.Notices(ctx, no)
			if err != nil || len(ns) != 1 || ns[0].Plaintext != want {
				t.Fatalf("notices of %s: %+v, %v; want the plaintext %q", no, ns, err, want)
			}
		}
	})
}

// TestUpdateWithoutOrderLeavesNoTrace: a paid update naming no order is
// refused, and neither its notice nor a payment is stored.
func TestUpdateWithoutOrderLeavesNoTrace(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		u := paid("query:tx-none", "", "tx-none", 100)
		if _, err := s.ApplyTransaction(ctx, u); !errors.Is(err, ledger.ErrNoChange) {
			t.Fatalf("apply without out_trade_no: %v, want ErrNoChange", err)
		}
		if seen, err := s.NoticeRecorded(ctx, "query:tx-none"); err != nil || seen {
			t.Fatalf("notice recorded: %v %v", seen, err)
		}
		if _, err := s.Payment(ctx, ""); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("payment without an order: %v, want ErrNotFound", err)
		}
	})
}

// TestFailedTransitionLeavesNoHistory: a transition's history row is
// written in its transaction. A payment whose transaction fails after
// the row was appended (here a trigger refusing its stock confirmation
// job, written after the history row) leaves no history: the audit trail
// never shows a SUCCESS the ledger does not hold.
func TestFailedTransitionLeavesNoHistory(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		db := s.DB()
		down := "CREATE TRIGGER jobs_down BEFORE INSERT ON outbox_jobs BEGIN SELECT RAISE(ABORT, 'jobs down'); END"
		if db.Dialector.Name() == "mysql" {
			down = "CREATE TRIGGER jobs_down BEFORE INSERT ON outbox_jobs FOR EACH ROW " +
				"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'jobs down'"
		}
		if err := db.Exec(down).Error; err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("hist-n1", "hist-o1", "hist-tx1", 100)); err == nil {
			t.Fatal("apply with its job refused: no error")
		}
		if h, err := s.History(ctx, "hist-o1"); err != nil || len(h) != 0 {
			t.Fatalf("history of a payment never recorded: %+v, %v; want none", h, err)
		}
		if _, err := s.Payment(ctx, "hist-o1"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("payment: %v, want ErrNotFound", err)
		}
	})
}
