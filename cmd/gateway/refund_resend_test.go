package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// scriptedRefunds is a RefundAPI whose answers a test writes in advance:
// each call takes the next answer for its kind, or fails the test.
type scriptedRefunds struct {
	t       *testing.T
	mu      sync.Mutex
	creates []func(gateway.WxRefundRequest) (*gateway.WxRefund, error)
	queries []func(string) (*gateway.WxRefund, error)
}

func (a *scriptedRefunds) CreateRefund(_ context.Context, req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.creates) == 0 {
		a.t.Errorf("unexpected create of %s", req.OutRefundNo)
		return nil, gateway.ErrOutcomeUnknown
	}
	next := a.creates[0]
	a.creates = a.creates[1:]
	return next(req)
}

func (a *scriptedRefunds) QueryRefund(_ context.Context, outRefundNo string) (*gateway.WxRefund, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queries) == 0 {
		a.t.Errorf("unexpected query of %s", outRefundNo)
		return nil, gateway.ErrOutcomeUnknown
	}
	next := a.queries[0]
	a.queries = a.queries[1:]
	return next(outRefundNo)
}

func timedOut(gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	return nil, fmt.Errorf("%w: i/o timeout", gateway.ErrOutcomeUnknown)
}

func refusedCreate(gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	return nil, &gateway.RefusedError{Status: 400, Code: "INVALID_REQUEST", Message: "duplicate"}
}

func notFound(string) (*gateway.WxRefund, error) { return nil, gateway.ErrRemoteNotFound }

func processing(no string) (*gateway.WxRefund, error) {
	return &gateway.WxRefund{OutRefundNo: no, RefundID: "wx-" + no, Status: "PROCESSING", Amount: 30}, nil
}

// TestRefusedResendIsCheckedBeforeFailing: the first attempt times out
// and WeChat Pay does not show it yet, so the refund is sent again; that
// re-send is refused. The refund fails (and gives its amount back) only
// if a query still finds nothing; if the first attempt shows up, it is
// recorded instead.
func TestRefusedResendIsCheckedBeforeFailing(t *testing.T) {
	cases := []struct {
		name     string
		after    func(string) (*gateway.WxRefund, error)
		want     ledger.RefundState
		refunded int64
	}{
		{"first attempt landed", processing, ledger.RefundProcessing, 30},
		{"nothing at WeChat Pay", notFound, ledger.RefundFailed, 0},
		{"query inconclusive", func(string) (*gateway.WxRefund, error) { return nil, gateway.ErrOutcomeUnknown },
			ledger.RefundUnknown, 30},
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				no := fmt.Sprintf("resend-%d-%d", i, time.Now().UnixNano())
				u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
					EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource", OutTradeNo: no, Plaintext: "{}"},
					OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", PayerOpenID: "o-resend",
					AmountTotal: 100, PayerTotal: 100, Currency: "CNY"}
				if _, err := s.ApplyTransaction(context.Background(), u); err != nil {
					t.Fatal(err)
				}
				api := &scriptedRefunds{t: t,
					creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){timedOut, refusedCreate},
					queries: []func(string) (*gateway.WxRefund, error){notFound, tc.after}}
				svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
				a, err := svc.Create(context.Background(), "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30})
				if err != nil {
					t.Fatal(err)
				}
				refunds, err := s.Refunds(context.Background(), no)
				if err != nil || len(refunds) != 1 {
					t.Fatalf("refunds of %s: %+v, %v", no, refunds, err)
				}
				r := refunds[0]
				p, err := s.Payment(context.Background(), no)
				if err != nil {
					t.Fatal(err)
				}
				if r.State != tc.want || r.Attempts != 2 || p.RefundedTotal != tc.refunded {
					t.Fatalf("refund %s after %d attempts (answer %d %s), refunded %d; want %s and %d",
						r.State, r.Attempts, a.Status, a.Body, p.RefundedTotal, tc.want, tc.refunded)
				}
				if len(api.creates)+len(api.queries) != 0 {
					t.Fatalf("calls left unmade: %d creates, %d queries", len(api.creates), len(api.queries))
				}
			})
		}
	})
}
