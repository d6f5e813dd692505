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

// slowWechat is a WeChat Pay where every query takes lat of the store's
// (fake) clock. Orders in paid were paid in full (their callback lost);
// the others are unpaid. onQuery is told the number of each query.
type slowWechat struct {
	unpaid
	lat     time.Duration
	now     *time.Time
	n       int
	paid    map[string]bool
	onQuery func(n int)
}

func (s *slowWechat) QueryOrder(ctx context.Context, no string) (*wechatpay.Transaction, error) {
	*s.now = s.now.Add(s.lat)
	s.n++
	if s.onQuery != nil {
		s.onQuery(s.n)
	}
	if s.paid[no] {
		s.mu.Lock()
		s.queries[no]++
		s.mu.Unlock()
		return &wechatpay.Transaction{OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS",
			AmountTotal: 100, PayerTotal: 100, Currency: "CNY", SuccessTime: *s.now}, nil
	}
	return s.unpaid.QueryOrder(ctx, no)
}

// TestALongRunEndsAndChecksNewOrders: one pass over the due orders that
// lasts longer than max_interval (50 orders, WeChat Pay taking 15 s a
// query: 12.5 min, max_interval 10 min) ends, checking every order once,
// though the first ones are due again before it is over; and an order
// registered during it, paid and its callback lost, is checked and
// recovered in that same run as soon as it is past the safety buffer,
// ahead of the orders due again.
func TestALongRunEndsAndChecksNewOrders(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const old = 50
		for i := range old {
			o := ledger.Order{OutTradeNo: fmt.Sprintf("long-%02d", i), AmountTotal: 100, ExpireAt: t0.Add(48 * time.Hour)}
			if _, err := s.RegisterOrder(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		start := t0.Add(2 * time.Hour)
		now = start
		var registeredAt time.Time
		wx := &slowWechat{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, lat: 15 * time.Second,
			now: &now, paid: map[string]bool{"long-fresh": true}}
		wx.onQuery = func(n int) {
			switch n {
			case 25: // the run is 6m15s old; the order is due at 11m15s
				registeredAt = now
				o := ledger.Order{OutTradeNo: "long-fresh", AmountTotal: 100, ExpireAt: now.Add(24 * time.Hour)}
				if _, err := s.RegisterOrder(context.Background(), o); err != nil {
					t.Error(err)
				}
			case 300: // a run that never ends: stop it
				cancel()
			}
		}
		var results []string
		job := New(Config{Interval: time.Minute, SafetyBuffer: 5 * time.Minute, MaxInterval: 10 * time.Minute, Batch: 10,
			Observe: func(r string) { results = append(results, r) }}, s, wx)
		changed, err := job.RunOnce(ctx)
		p, _ := s.Payment(context.Background(), "long-fresh")
		t.Logf("run: %d queries over %v (err %v); order registered at +%v queried %d times, %s",
			wx.n, now.Sub(start), err, registeredAt.Sub(start), wx.queries["long-fresh"], p.State)
		if err != nil || wx.n > old+1 {
			t.Fatalf("run did not end after one pass: %d queries for %d orders, err %v", wx.n, old+1, err)
		}
		for i := range old {
			if no := fmt.Sprintf("long-%02d", i); wx.queries[no] != 1 {
				t.Errorf("%s asked about %d times in the run, want once", no, wx.queries[no])
			}
		}
		if wx.queries["long-fresh"] != 1 || p.State != ledger.PaymentSuccess || changed != 1 || results[len(results)-1] != Recovered {
			t.Fatalf("order registered %v into the run: queried %d times, %s, run changed %d (results %v); want recovered in the run",
				registeredAt.Sub(start), wx.queries["long-fresh"], p.State, changed, results)
		}

		// The next run (at once, as Run starts it after a long run) takes
		// the orders due again, once each, and ends too.
		if _, err := job.RunOnce(ctx); err != nil {
			t.Fatalf("second run: %v after %d queries", err, wx.n)
		}
		for i := range old {
			if no := fmt.Sprintf("long-%02d", i); wx.queries[no] != 2 {
				t.Errorf("%s asked about %d times after two runs, want twice", no, wx.queries[no])
			}
		}
	})
}

// TestNeverCheckedOrdersAreListedFirst: the ledger lists an order never
// checked (next_check_at NULL) before orders scheduled and due again,
// though it was registered after them, on SQLite and MariaDB alike: the
// run above relies on it to check new orders ahead of a backlog.
func TestNeverCheckedOrdersAreListedFirst(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx := context.Background()
		for _, no := range []string{"first-a", "first-b"} {
			if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 100, ExpireAt: t0.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if err := s.ScheduleCheck(ctx, no, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		now = t0.Add(time.Minute)
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "first-new", AmountTotal: 100, ExpireAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		now = t0.Add(30 * time.Minute)
		page, err := s.AwaitingPayment(ctx, now.Add(-5*time.Minute), 3)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range page {
			got = append(got, p.OutTradeNo)
		}
		if fmt.Sprint(got) != "[first-new first-a first-b]" {
			t.Fatalf("listed %v, want the order never checked first", got)
		}
	})
}

// failedAttempt answers state (PAYERROR or REVOKED: an unpaid order) until
// the order is closed at WeChat Pay, then CLOSED.
type failedAttempt struct {
	unpaid
	state string
}

func (f *failedAttempt) QueryOrder(_ context.Context, no string) (*wechatpay.Transaction, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries[no]++
	state := f.state
	if f.closed[no] {
		state = "CLOSED"
	}
	return &wechatpay.Transaction{OutTradeNo: no, TradeState: state}, nil
}

// TestFailedAttemptsCloseAtWechatAtExpiry: an order WeChat Pay answers
// PAYERROR or REVOKED about is unpaid, not closed there: like a NOTPAY
// one, it stays open in the ledger until its expire_at, then is closed at
// WeChat Pay first and in the ledger from the answer after the close.
func TestFailedAttemptsCloseAtWechatAtExpiry(t *testing.T) {
	for _, state := range []string{"PAYERROR", "REVOKED"} {
		t.Run(state, func(t *testing.T) {
			ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
				t0 := time.Now().UTC().Truncate(time.Second)
				now := t0
				s := base.WithClock(func() time.Time { return now })
				ctx := context.Background()
				if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "att-1", AmountTotal: 100, ExpireAt: t0.Add(time.Hour)}); err != nil {
					t.Fatal(err)
				}
				wx := &failedAttempt{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, state: state}
				var results []string
				job := New(Config{Interval: time.Minute, SafetyBuffer: 5 * time.Minute, MaxInterval: 10 * time.Minute, Batch: 10,
					Observe: func(r string) { results = append(results, r) }}, s, wx)
				runSteps(t, job, wx, func(at time.Duration) { now = t0.Add(at) }, []step{
					{10 * time.Minute, 1}, // before expire_at: left open
					{30 * time.Minute, 1}, // still open, asked again
					{time.Hour, 2},        // its expire_at: query, close at WeChat Pay, query again
					{2 * time.Hour, 0},    // closed: never again
				})
				p, _ := s.Payment(ctx, "att-1")
				h, _ := s.History(ctx, "att-1")
				if p.State != ledger.PaymentClosed || !wx.closed["att-1"] || len(h) != 2 || fmt.Sprint(results) != "[open open closed]" {
					t.Fatalf("%s: ledger %s (%d history rows), closed at WeChat Pay %v, results %v; want open until expire_at, then closed at WeChat Pay and in the ledger",
						state, p.State, len(h), wx.closed["att-1"], results)
				}
			})
		})
	}
}
