package wxpaysim_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRefundsPerOrderCapped: WeChat Pay takes at most 50 refunds of one
// order; the 51st is refused (signed 400 INVALID_REQUEST) though money is
// left, while a repeat of one of the 50 still answers it.
func TestRefundsPerOrderCapped(t *testing.T) {
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	sim.SetFaults(wxpaysim.Faults{RefundClosedNext: 1}) // the first one's CLOSED: it counts all the same
	for i := range 50 {
		if _, err := createRefund(ctx, c, "T1", fmt.Sprintf("R%d", i), 1, 100); err != nil {
			t.Fatalf("refund %d: %v", i, err)
		}
		if i == 0 {
			sim.SettleRefunds()
		}
	}
	if _, err := createRefund(ctx, c, "T1", "R50", 1, 100); !isSigned(400, "INVALID_REQUEST")(err) {
		t.Fatalf("51st refund: err=%v, want a signed 400 INVALID_REQUEST", err)
	}
	if _, err := createRefund(ctx, c, "T1", "R49", 1, 100); err != nil {
		t.Fatalf("repeat of the 50th: %v", err)
	}
	if n := len(sim.Refunds()); n != 50 {
		t.Fatalf("%d refunds, want 50", n)
	}
	if got := sim.RefundsRefused()["too_many_refunds"]; got != 1 {
		t.Fatalf(`RefundsRefused()["too_many_refunds"]=%d, want 1`, got)
	}
}
