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
// close whose outcome is unknown it stays open, asked again next run.
func TestExpiredOrdersAreClosedAtWeChatPayFirst(t *testing.T) {
	unknown := fmt.Errorf("close order: %w", wechatpay.ErrUnknownOutcome)
	cases := []struct {
		state    string
		closeErr error
		want     ledger.PaymentState
	}{
		{"", nil, ledger.PaymentClosed},
		{"", unknown, ledger.PaymentClosed}, // still not found after it: nothing there to pay
		{"PAYERROR", nil, ledger.PaymentClosed},
		{"PAYERROR", unknown, ledger.PaymentExpected},
		{"REVOKED", unknown, ledger.PaymentExpected},
	}
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx := context.Background()
		for i, tc := range cases {
			no := fmt.Sprintf("close-%d-%d", i, t0.UnixNano())
			if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 100, ExpireAt: t0.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			wx := &oneState{state: tc.state, closeErr: tc.closeErr}
			job := New(Config{Interval: time.Minute, SafetyBuffer: time.Minute, MaxInterval: 10 * time.Minute, Batch: 10}, s, wx)
			now = t0.Add(time.Hour)
			if _, err := job.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			p, err := s.Payment(ctx, no)
			if err != nil {
				t.Fatal(err)
			}
			if p.State != tc.want || wx.closes != 1 || wx.queries != 2 {
				t.Fatalf("%q, close error %v: order %s after %d closes, %d queries; want %s after 1 close, 2 queries",
					tc.state, tc.closeErr, p.State, wx.closes, wx.queries, tc.want)
			}
			now = t0
		}
	})
}
