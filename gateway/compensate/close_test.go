package compensate

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// oneState answers every query with state ("" is WeChat Pay's signed "not
// found"), and every close with closeErr, counting the closes.
type oneState struct {
	mu       sync.Mutex
	state    string
	closeErr error
	queries  int
	closes   int
}

func (o *oneState) QueryOrder(_ context.Context, no string) (*wechatpay.Transaction, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.queries++
	if o.state == "" {
		return nil, fmt.Errorf("query order %s: %w", no, wechatpay.ErrNotFound)
	}
	return &wechatpay.Transaction{OutTradeNo: no, TradeState: o.state}, nil
}

func (o *oneState) CloseOrder(context.Context, string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closes++
	return o.closeErr
}

func (o *oneState) total() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queries
}

// TestExpiredOrdersAreClosedAtWeChatPayFirst: at its expire_at an order
// WeChat Pay says it never saw is closed there too before the ledger
// closes it (its prepay may be made late); a PAYERROR or REVOKED order is
// closed in the ledger only once WeChat Pay answered the close: after a
// close whose outcome is unknown it stays open, asked again next run. A
// close WeChat Pay refused, signed, as paid (ORDERPAID) keeps it open
// unless the query says paid.
func TestExpiredOrdersAreClosedAtWeChatPayFirst(t *testing.T) {
	unknown := fmt.Errorf("close order: %w", wechatpay.ErrUnknownOutcome)
	unsigned := fmt.Errorf("close order: %w", &wechatpay.BusinessError{Status: 403, Code: "NO_AUTH"})
	signed := fmt.Errorf("close order: %w", &wechatpay.BusinessError{Status: 400, Code: "ORDER_CLOSED", Verified: true})
	paid := fmt.Errorf("close order: %w", &wechatpay.BusinessError{Status: 400, Code: "ORDERPAID", Verified: true})
	paidUnsigned := fmt.Errorf("close order: %w", &wechatpay.BusinessError{Status: 400, Code: "ORDERPAID"})
	cases := []struct {
		state    string
		closeErr error
		want     ledger.PaymentState
	}{
		{"", nil, ledger.PaymentClosed},
		{"", unknown, ledger.PaymentClosed}, // still not found after it: nothing there to pay
		{"PAYERROR", nil, ledger.PaymentClosed},
		{"PAYERROR", signed, ledger.PaymentClosed},
		{"PAYERROR", unknown, ledger.PaymentExpected},
		{"PAYERROR", unsigned, ledger.PaymentExpected},
		{"REVOKED", unknown, ledger.PaymentExpected},
		// WeChat Pay's signed "paid" is not overruled by a query saying
		// otherwise (a "not found" may be a proxy's): asked again.
		{"", paid, ledger.PaymentExpected},
		{"PAYERROR", paid, ledger.PaymentExpected},
		{"", paidUnsigned, ledger.PaymentClosed},
	}
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		s, t0, set := onClock(base)
		for i, tc := range cases {
			no := fmt.Sprintf("close-%d-%d", i, t0.UnixNano())
			set(0)
			expecting(t, s, t0, no)
			wx := &oneState{state: tc.state, closeErr: tc.closeErr}
			set(time.Hour)
			p := runOnce(t, testJob(s, wx, nil), s, no)
			if p.State != tc.want || wx.closes != 1 || wx.queries != 2 {
				t.Fatalf("%q, close error %v: order %s after %d closes, %d queries; want %s after 1 close, 2 queries",
					tc.state, tc.closeErr, p.State, wx.closes, wx.queries, tc.want)
			}
		}
	})
}

// limited answers every query "rate limited" until it is let go, then
// NOTPAY; it counts the queries.
type limited struct {
	oneState
	limit bool
}

func (l *limited) QueryOrder(ctx context.Context, no string) (*wechatpay.Transaction, error) {
	l.mu.Lock()
	if l.limit {
		l.queries++
		l.mu.Unlock()
		return nil, fmt.Errorf("query order %s: %w: %w: http 429 FREQUENCY_LIMITED", no, wechatpay.ErrUnknownOutcome,
			wechatpay.ErrRateLimited)
	}
	l.mu.Unlock()
	return l.oneState.QueryOrder(ctx, no)
}

// TestRateLimitEndsTheRun: when WeChat Pay answers that the merchant is
// over its query quota, the run stops after that one query instead of
// asking about every due order, and that order is handed back, so the
// next run asks about all of them.
func TestRateLimitEndsTheRun(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		ctx := context.Background()
		s, t0, set := onClock(base)
		no := fmt.Sprintf("lim-%d", t0.UnixNano())
		expecting(t, s, t0, no+"-0", no+"-1", no+"-2")
		wx := &limited{oneState: oneState{state: "NOTPAY"}, limit: true}
		var results []string
		job := testJob(s, wx, &results)
		set(2 * time.Minute)
		if _, err := job.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if wx.total() != 1 || len(results) != 1 || results[0] != Limited {
			t.Fatalf("rate-limited run: %d queries, results %v; want 1 query, limited", wx.total(), results)
		}
		wx.mu.Lock()
		wx.limit = false
		wx.mu.Unlock()
		if _, err := job.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if wx.total() != 4 {
			t.Fatalf("next run: %d queries in all, want 4 (every order asked, the handed-back one too)", wx.total())
		}
	})
}

// TestRateLimitedCloseEndsTheRun: a close at expiry that WeChat Pay
// refuses for the merchant's quota closed nothing: the order stays open,
// the run stops (result limited) and the order is handed back.
func TestRateLimitedCloseEndsTheRun(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		s, t0, set := onClock(base)
		no := fmt.Sprintf("lim-close-%d", t0.UnixNano())
		expecting(t, s, t0, no)
		wx := &oneState{closeErr: fmt.Errorf("close order: %w: %w", wechatpay.ErrUnknownOutcome, wechatpay.ErrRateLimited)}
		var results []string
		set(time.Hour)
		p := runOnce(t, testJob(s, wx, &results), s, no)
		due, err := s.AwaitingPayment(context.Background(), s.Now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if p.State != ledger.PaymentExpected || len(results) != 1 || results[0] != Limited || len(due) != 1 {
			t.Fatalf("order %s, results %v, %d due; want EXPECTED, limited, due again at once", p.State, results, len(due))
		}
	})
}

// onClock returns base on a clock the test sets, as an offset from t0
// (now, to the second).
func onClock(base *ledger.Store) (s *ledger.Store, t0 time.Time, set func(time.Duration)) {
	t0 = time.Now().UTC().Truncate(time.Second)
	now := t0
	return base.WithClock(func() time.Time { return now }), t0, func(d time.Duration) { now = t0.Add(d) }
}

// expecting registers orders of 100 fen that expire an hour after t0.
func expecting(t *testing.T, s *ledger.Store, t0 time.Time, nos ...string) {
	t.Helper()
	for _, no := range nos {
		if _, err := s.RegisterOrder(context.Background(), ledger.Order{OutTradeNo: no, AmountTotal: 100,
			ExpireAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
}

// testJob is the job these tests run on s: checks due a minute after an
// order is made; each result is appended to results, if given.
func testJob(s *ledger.Store, wx Querier, results *[]string) *Job {
	cfg := Config{Interval: time.Minute, SafetyBuffer: time.Minute, MaxInterval: 10 * time.Minute, Batch: 10}
	if results != nil {
		cfg.Observe = func(r string) { *results = append(*results, r) }
	}
	return New(cfg, s, wx)
}

// runOnce runs job once and returns order no as the ledger then holds it.
func runOnce(t *testing.T, job *Job, s *ledger.Store, no string) *ledger.Payment {
	t.Helper()
	if _, err := job.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, err := s.Payment(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
