package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// rfPayment is a payment callback for order no.
func rfPayment(no string) ledger.TransactionUpdate {
	txID := "tx-" + no
	return ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: "pay-" + no, Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS",
			ResourceType: "encrypt-resource", OutTradeNo: no, TransactionID: txID, Plaintext: "{}"},
		OutTradeNo: no, TransactionID: txID, TradeState: "SUCCESS", AppID: "wxapp", MchID: "1900000001",
		PayerOpenID: "openid-1", AmountTotal: 100, PayerTotal: 100, Currency: "CNY",
		SuccessTime: time.Date(2026, 11, 23, 1, 2, 3, 0, time.UTC),
	}
}

// rfRefundNotice is WeChat Pay's REFUND.<state> notice for refund
// outRefundNo of order no, which the ledger never made.
func rfRefundNotice(no, outRefundNo string, state ledger.RefundState) ledger.RefundUpdate {
	return ledger.RefundUpdate{OutRefundNo: outRefundNo, State: state, RefundID: "503-" + outRefundNo, TransactionID: "tx-" + no,
		Amount: 100, SuccessTime: time.Now(), Source: ledger.SourceCallback, Ref: "rn-" + outRefundNo + "-" + string(state),
		Notice: &ledger.Notice{NotifyID: "rn-" + outRefundNo + "-" + string(state), Source: ledger.SourceCallback,
			EventType: "REFUND." + string(state), ResourceType: "encrypt-resource", OutTradeNo: no,
			TransactionID: "tx-" + no, OutRefundNo: outRefundNo, Plaintext: "{}"}}
}

// reportRefundFirst stores the refund notice as applyRefund does for a
// refund the ledger never made: ErrNotFound, notice stored, flagged.
func reportRefundFirst(t *testing.T, s *ledger.Store, u ledger.RefundUpdate) {
	t.Helper()
	if _, err := s.ApplyRefund(context.Background(), u); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("refund notice %s of %s: err = %v, want ErrNotFound (stored, flagged UNKNOWN_REFUND)",
			u.OutRefundNo, u.Notice.OutTradeNo, err)
	}
}

// rfState is what the ledger holds for an order's effects: its
// confirmation jobs (kind:state:held?) and its anomalies (kind:ref:seen).
func rfState(t *testing.T, s *ledger.Store, no string) string {
	t.Helper()
	ctx := context.Background()
	jobs, err := s.Outbox().JobsOf(ctx, no)
	if err != nil {
		t.Fatal(err)
	}
	var js []string
	for _, j := range jobs {
		js = append(js, fmt.Sprintf("%s:%s:%v", j.Kind, j.State, strings.HasPrefix(j.LastError, "held:")))
	}
	as, err := s.Anomalies(ctx, no)
	if err != nil {
		t.Fatal(err)
	}
	var fs []string
	for _, a := range as {
		fs = append(fs, fmt.Sprintf("%s:%s:%d", a.Kind, a.Ref, a.SeenCount))
	}
	sort.Strings(fs)
	return fmt.Sprintf("jobs %v anomalies %v", js, fs)
}

func heldState(no, outRefundNo string) string {
	return fmt.Sprintf("jobs [%s:%s:true] anomalies [%s:refunded:%s:1 %s:%s:SUCCESS:1]", ledger.JobConfirmInventory,
		ledger.JobDead, ledger.AnomalyRefundedOutside, no, ledger.AnomalyUnknownRefund, outRefundNo)
}

func plainState() string {
	return fmt.Sprintf("jobs [%s:%s:false] anomalies []", ledger.JobConfirmInventory, ledger.JobPending)
}

func assertRefundedFirstFlag(t *testing.T, s *ledger.Store, no, outRefundNo string) {
	t.Helper()
	as, err := s.Anomalies(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.Kind == ledger.AnomalyRefundedOutside {
			if !strings.Contains(a.Detail, "refund "+outRefundNo) || !strings.Contains(a.Detail, "confirm:"+no) {
				t.Errorf("REFUNDED_OUTSIDE of %s: detail %q, want it to name refund %s and job confirm:%s", no, a.Detail, outRefundNo, no)
			}
			return
		}
	}
	t.Errorf("%s: no REFUNDED_OUTSIDE anomaly in %+v", no, as)
}

// TestRefundNoticeBeforePaymentHoldsConfirmation: the merchant refunded
// an order in the merchant platform while its payment callback was still
// being redelivered, so WeChat Pay's REFUND.SUCCESS notice came first
// (stored, flagged UNKNOWN_REFUND). When the payment is then recorded, by
// callback or query, for an order registered or not, its stock
// confirmation is held dead and REFUNDED_OUTSIDE flagged, as for an
// order query answering trade_state REFUND. Redeliveries of either notice
// change nothing. A refund notice that moved no money (ABNORMAL), or one
// for another order, holds nothing.
func TestRefundNoticeBeforePaymentHoldsConfirmation(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "rf-reg", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"rf-reg", "rf-new"} { // moveExisting and insertPaid
			refund := rfRefundNotice(no, "out-"+no, ledger.RefundSuccess)
			reportRefundFirst(t, s, refund)
			pay := rfPayment(no)
			p, err := s.ApplyTransaction(ctx, pay)
			if err != nil || p.State != ledger.PaymentSuccess {
				t.Fatalf("%s: payment after its refund notice: %+v, %v; want SUCCESS", no, p, err)
			}
			want := heldState(no, "out-"+no)
			if got := rfState(t, s, no); got != want {
				t.Fatalf("%s refunded before its payment was recorded:\n got %s\nwant %s", no, got, want)
			}
			assertRefundedFirstFlag(t, s, no, "out-"+no)
			// WeChat Pay redelivers both: nothing changes, nothing is counted twice.
			if _, err := s.ApplyTransaction(ctx, pay); !errors.Is(err, ledger.ErrAlreadyRecorded) {
				t.Fatalf("%s: redelivered payment: err = %v, want ErrAlreadyRecorded", no, err)
			}
			if _, err := s.ApplyRefund(ctx, refund); !errors.Is(err, ledger.ErrAlreadyRecorded) {
				t.Fatalf("%s: redelivered refund notice: err = %v, want ErrAlreadyRecorded", no, err)
			}
			if got := rfState(t, s, no); got != want {
				t.Fatalf("%s after redeliveries:\n got %s\nwant %s", no, got, want)
			}
			if n, _ := s.Notices(ctx, no); len(n) != 2 {
				t.Fatalf("%s: %d notices stored, want the refund's and the payment's", no, len(n))
			}
		}

		// The same fact learnt by an order query (trade_state REFUND) after
		// the refund notice: one hold, one flag.
		reportRefundFirst(t, s, rfRefundNotice("rf-q", "out-rf-q", ledger.RefundSuccess))
		q := rfPayment("rf-q")
		q.TradeState, q.Notice.Source, q.Notice.NotifyID = "REFUND", ledger.SourceQuery, "query:tx-rf-q"
		if _, err := s.ApplyTransaction(ctx, q); err != nil {
			t.Fatal(err)
		}
		if got, want := rfState(t, s, "rf-q"), heldState("rf-q", "out-rf-q"); got != want {
			t.Fatalf("rf-q:\n got %s\nwant %s", got, want)
		}

		// ABNORMAL moved no money: the confirmation goes out.
		reportRefundFirst(t, s, rfRefundNotice("rf-abn", "out-rf-abn", ledger.RefundAbnormal))
		if _, err := s.ApplyTransaction(ctx, rfPayment("rf-abn")); err != nil {
			t.Fatal(err)
		}
		if got, want := rfState(t, s, "rf-abn"),
			fmt.Sprintf("jobs [%s:%s:false] anomalies [%s:out-rf-abn:ABNORMAL:1]", ledger.JobConfirmInventory, ledger.JobPending,
				ledger.AnomalyUnknownRefund); got != want {
			t.Fatalf("rf-abn:\n got %s\nwant %s", got, want)
		}
		// An order no refund notice names.
		if _, err := s.ApplyTransaction(ctx, rfPayment("rf-plain")); err != nil {
			t.Fatal(err)
		}
		if got := rfState(t, s, "rf-plain"); got != plainState() {
			t.Fatalf("rf-plain: %s, want %s", got, plainState())
		}
	})
}

// TestRefundNoticeBeforePaymentInABatch: ApplyTransactions gives what
// ApplyTransaction gives for each update. A batch holding a payment whose
// refund notice came first is applied one by one: that confirmation is
// held and flagged, the others go out. A batch whose orders no such
// notice names (another order's does not count) still shares one
// transaction. A redelivered batch changes nothing.
func TestRefundNoticeBeforePaymentInABatch(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "rfb-reg", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		reportRefundFirst(t, s, rfRefundNotice("rfb-reg", "out-rfb-reg", ledger.RefundSuccess))
		reportRefundFirst(t, s, rfRefundNotice("rfb-new", "out-rfb-new", ledger.RefundSuccess))
		reportRefundFirst(t, s, rfRefundNotice("rfb-abn", "out-rfb-abn", ledger.RefundAbnormal))
		reportRefundFirst(t, s, rfRefundNotice("rfb-later", "out-rfb-later", ledger.RefundSuccess))

		// No order of this batch was refunded first: it shares one transaction.
		plain := []ledger.TransactionUpdate{rfPayment("rfb-p1"), rfPayment("rfb-p2"), rfPayment("rfb-abn")}
		errs, batched := s.ApplyTransactions(ctx, plain)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("plain update %d: %v", i, err)
			}
		}
		if !batched {
			t.Fatal("a batch of plain payments was not batched")
		}
		for _, no := range []string{"rfb-p1", "rfb-p2"} {
			if got := rfState(t, s, no); got != plainState() {
				t.Fatalf("%s: %s, want %s", no, got, plainState())
			}
		}

		us := []ledger.TransactionUpdate{rfPayment("rfb-p3"), rfPayment("rfb-reg"), rfPayment("rfb-new"), rfPayment("rfb-p4")}
		for range 2 { // the second time, a redelivery of the whole batch
			errs, batched = s.ApplyTransactions(ctx, us)
			if batched {
				t.Fatal("a batch holding payments refunded before they were recorded shared one transaction")
			}
			for _, no := range []string{"rfb-reg", "rfb-new"} {
				if got, want := rfState(t, s, no), heldState(no, "out-"+no); got != want {
					t.Fatalf("batched %s refunded before its payment was recorded:\n got %s\nwant %s", no, got, want)
				}
				assertRefundedFirstFlag(t, s, no, "out-"+no)
			}
			for _, no := range []string{"rfb-p3", "rfb-p4"} {
				if got := rfState(t, s, no); got != plainState() {
					t.Fatalf("%s: %s, want %s", no, got, plainState())
				}
			}
		}
		for i, err := range errs {
			if !errors.Is(err, ledger.ErrAlreadyRecorded) {
				t.Fatalf("redelivered update %d: err = %v, want ErrAlreadyRecorded", i, err)
			}
		}
	})
}

// TestBatchOfRefundedPayments: a batch of payments WeChat Pay reports
// already refunded (trade_state REFUND) gets what ApplyTransaction gives
// each: the payment recorded, its confirmation held, REFUNDED_OUTSIDE
// flagged once, also when the batch is redelivered.
func TestBatchOfRefundedPayments(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		var us []ledger.TransactionUpdate
		for _, no := range []string{"rfr-1", "rfr-2"} {
			u := rfPayment(no)
			u.TradeState = "REFUND"
			us = append(us, u)
		}
		us = append(us, rfPayment("rfr-plain"))
		for round := range 2 {
			errs, batched := s.ApplyTransactions(ctx, us)
			for i, err := range errs {
				if round == 0 && err != nil || round == 1 && !errors.Is(err, ledger.ErrAlreadyRecorded) {
					t.Fatalf("round %d update %d: %v", round, i, err)
				}
			}
			for _, no := range []string{"rfr-1", "rfr-2"} {
				p, err := s.Payment(ctx, no)
				if err != nil || p.State != ledger.PaymentSuccess {
					t.Fatalf("%s: %+v %v, want SUCCESS", no, p, err)
				}
				want := fmt.Sprintf("jobs [%s:%s:true] anomalies [%s:refunded:%s:1]", ledger.JobConfirmInventory, ledger.JobDead,
					ledger.AnomalyRefundedOutside, no)
				if got := rfState(t, s, no); got != want {
					t.Fatalf("round %d batched=%v %s (trade_state REFUND):\n got %s\nwant %s (as ApplyTransaction gives)",
						round, batched, no, got, want)
				}
			}
			if got := rfState(t, s, "rfr-plain"); got != plainState() {
				t.Fatalf("rfr-plain: %s", got)
			}
		}
	})
}
