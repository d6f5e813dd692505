package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestAnswerOfAnotherAmountIsNotRecorded: WeChat Pay answers a refund of
// 30 fen, at its creation and again to the janitor's query, with SUCCESS
// for 29 fen. The answer is not about the refund the ledger holds: nothing
// is recorded (it stays CREATED with its 30 fen reserved, the client is
// told it is being established), REFUND_AMOUNT_MISMATCH is flagged for a
// person, and the janitor neither records it nor sends it again.
func TestAnswerOfAnotherAmountIsNotRecorded(t *testing.T) {
	paid29 := func(no string) *gateway.WxRefund {
		return &gateway.WxRefund{OutRefundNo: no, RefundID: "wx-" + no, Status: "SUCCESS", Amount: 29,
			SuccessTime: time.Now()}
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("amt-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t,
			creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){
				func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) { return paid29(req.OutRefundNo), nil }},
			queries: []func(string) (*gateway.WxRefund, error){
				func(no string) (*gateway.WxRefund, error) { return paid29(no), nil }}}
		cfg := gateway.RefundConfig{Recheck: time.Hour, CallTimeout: time.Second}
		svc := gateway.NewRefundService(cfg, s, api, gateway.NewMemoryLocker())
		a, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30})
		if err != nil {
			t.Fatal(err)
		}
		if a.Status != http.StatusAccepted {
			t.Fatalf("answer %d %s, want 202: WeChat's answer of another amount tells nothing about this refund", a.Status, a.Body)
		}
		checkRefund(t, s, no, ledger.RefundCreated, 1, 30)
		flagged := func() int {
			t.Helper()
			as, err := s.Anomalies(ctx, no)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, an := range as {
				if an.Kind == ledger.AnomalyRefundAmountMismatch {
					n++
				}
			}
			return n
		}
		if flagged() != 1 {
			t.Fatalf("no %s flagged for WeChat's answer of 29 fen", ledger.AnomalyRefundAmountMismatch)
		}
		if err := makeDue(s, no); err != nil {
			t.Fatal(err)
		}
		if n := svc.Sweep(ctx, 10); n != 1 || api.queriesLeft() != 0 {
			t.Fatalf("sweep looked at %d refunds, %d query answers left; want 1 and 0", n, api.queriesLeft())
		}
		checkRefund(t, s, no, ledger.RefundCreated, 1, 30)
		r, err := s.Refunds(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		if next := r[0].NextCheckAt; next == nil || next.Before(time.Now().Add(30*time.Minute)) {
			t.Fatalf("next check %v after the query's answer of another amount, want at its recheck (an hour)", next)
		}
	})
}
