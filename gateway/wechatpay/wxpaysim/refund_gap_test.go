package wxpaysim_test

import (
	"context"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRefundGap: with RefundGap WeChat Pay's rule holds that refund
// applications of one order be a minute apart: a new refund of the order
// within the gap is answered a signed 429 FREQUENCY_LIMITED and applies
// nothing (nor moves the gap), while a repeat of the last out_refund_no
// is answered with its refund, and another order is not held. Once the
// gap has passed the order's next refund is applied.
func TestRefundGap(t *testing.T) {
	clock, advance := testClock()
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1, RefundGap: time.Minute, Now: clock})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	for _, no := range []string{"T1", "T2"} {
		if _, err := sim.Pay(ctx, no, 100, "", true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := createRefund(ctx, c, "T1", "R1", 10, 100); err != nil {
		t.Fatalf("first refund: %v", err)
	}
	advance(30 * time.Second)
	if _, err := createRefund(ctx, c, "T1", "R2", 10, 100); !isSigned(429, "FREQUENCY_LIMITED")(err) {
		t.Fatalf("second refund 30 s later: err=%v, want a signed 429 FREQUENCY_LIMITED", err)
	}
	if o, _ := sim.Order("T1"); o.Refunded != 10 || o.RefundCount != 1 || sim.RefundCount("R2") != 0 {
		t.Fatalf("after the refused one: T1 refunded %d in %d refunds, R2 applied %d times; want 10 in 1, R2 none",
			o.Refunded, o.RefundCount, sim.RefundCount("R2"))
	}
	again, err := createRefund(ctx, c, "T1", "R1", 10, 100)
	if err != nil || *again.OutRefundNo != "R1" || sim.RefundCount("R1") != 1 {
		t.Fatalf("R1 sent again within the gap: %+v, %v, executed %d; want R1, executed once", again, err, sim.RefundCount("R1"))
	}
	if _, err := createRefund(ctx, c, "T2", "R3", 10, 100); err != nil {
		t.Fatalf("refund of another order: %v", err)
	}
	// The gap counts from R1, the last refund applied, not from the
	// refused R2: a minute after R1 the order takes one again.
	advance(30*time.Second - time.Millisecond)
	if _, err := createRefund(ctx, c, "T1", "R2", 10, 100); !isSigned(429, "FREQUENCY_LIMITED")(err) {
		t.Fatalf("second refund just short of a minute: err=%v, want a signed 429 FREQUENCY_LIMITED", err)
	}
	advance(time.Millisecond)
	if _, err := createRefund(ctx, c, "T1", "R2", 10, 100); err != nil {
		t.Fatalf("second refund a minute later: %v", err)
	}
	if o, _ := sim.Order("T1"); o.Refunded != 20 || sim.RefundCount("R2") != 1 {
		t.Fatalf("T1 refunded %d, R2 applied %d times; want 20, once", o.Refunded, sim.RefundCount("R2"))
	}
	if got := sim.RefundsRefused(); len(got) != 1 || got["order_gap"] != 2 {
		t.Fatalf(`RefundsRefused()=%v, want order_gap 2`, got)
	}
	if got := sim.FaultsInjected(); len(got) != 0 {
		t.Fatalf("FaultsInjected()=%v, want none: the rule is not a fault", got)
	}
}

// TestRefundGapRefusalsFirst: an application WeChat Pay refuses on its own
// merits keeps its answer within the gap (the order is not paid, or not
// that much is left of it), and an injected FREQUENCY_LIMITED applies
// nothing, so it starts no gap.
func TestRefundGapRefusalsFirst(t *testing.T) {
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1, RefundGap: time.Minute})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	sim.SetFaults(wxpaysim.Faults{FrequencyLimitedNext: 1})
	if _, err := createRefund(ctx, c, "T1", "R1", 90, 100); !isSigned(429, "FREQUENCY_LIMITED")(err) {
		t.Fatalf("injected: err=%v, want a signed 429 FREQUENCY_LIMITED", err)
	}
	if _, err := createRefund(ctx, c, "T1", "R1", 90, 100); err != nil {
		t.Fatalf("R1 after the injected 429: %v", err)
	}
	if _, err := createRefund(ctx, c, "T1", "R2", 20, 100); !isSigned(400, "INVALID_REQUEST")(err) {
		t.Fatalf("over-refund within the gap: err=%v, want a signed 400 INVALID_REQUEST", err)
	}
	if _, err := createRefund(ctx, c, "NOPE", "R3", 10, 100); !isSigned(404, "RESOURCE_NOT_EXISTS")(err) {
		t.Fatalf("unknown order: err=%v, want a signed 404 RESOURCE_NOT_EXISTS", err)
	}
	want := map[string]int{"over_refund": 1, "not_paid": 1}
	if got := sim.RefundsRefused(); len(got) != len(want) || got["over_refund"] != 1 || got["not_paid"] != 1 {
		t.Fatalf("RefundsRefused()=%v, want %v", got, want)
	}
	if got := sim.FaultsInjected()["frequency_limited"]; got != 1 {
		t.Fatalf(`FaultsInjected()["frequency_limited"]=%d, want 1`, got)
	}
}

// TestRefundGapOff: RefundGap 0 (the default) takes back-to-back refunds
// of one order, as most tests send them.
func TestRefundGapOff(t *testing.T) {
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"R1", "R2"} {
		if _, err := createRefund(ctx, c, "T1", no, 10, 100); err != nil {
			t.Fatalf("%s: %v", no, err)
		}
	}
	if o, _ := sim.Order("T1"); o.Refunded != 20 || len(sim.RefundsRefused()) != 0 {
		t.Fatalf("T1 refunded %d, refused %v; want 20, none", o.Refunded, sim.RefundsRefused())
	}
}
