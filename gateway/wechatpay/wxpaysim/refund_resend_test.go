package wxpaysim_test

import (
	"context"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRefundsResentBlind: an application of a refund WeChat Pay holds
// made again with no query of it answered "not found" since counts, so
// does one after a query that found it; one after a "not found" (the
// query lag's, or one before the refund existed: the first application
// may land after it) does not. A "not found" a fault kept from the
// merchant gives no leave.
func TestRefundsResentBlind(t *testing.T) {
	sim, _, c := refundSim(t, &merchant{})
	ctx := context.Background()
	query := func(no string) {
		_, _, _ = (&refunddomestic.RefundsApiService{Client: c}).QueryByOutRefundNo(ctx,
			refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String(no)})
	}
	create := func(no string) {
		if _, err := createRefund(ctx, c, "T1", no, 10, 100); err != nil {
			t.Fatalf("create %s: %v", no, err)
		}
	}
	query("R2") // not found before its first application: leave all the same (that one may land late)
	create("R1")
	create("R1") // blind: 1
	query("R1")  // found: no leave to send again
	create("R1") // blind: 2
	create("R2")
	sim.SetFaults(wxpaysim.Faults{RefundQueryLag: time.Hour})
	query("R2") // "not found" (the lag): leave for one more
	create("R2")
	sim.SetFaults(wxpaysim.Faults{PathPrefix: "/v3/refund/", ApplyThenTimeoutNext: 2, HoldFor: time.Millisecond,
		RefundQueryLag: time.Hour})
	query("R2") // "not found", never answered (the connection dropped, and on net/http's retry): no leave
	sim.SetFaults(wxpaysim.Faults{})
	create("R2") // on the first "not found"
	create("R2") // blind: 1
	got := sim.RefundsResentBlind()
	if len(got) != 2 || got["R1"] != 2 || got["R2"] != 1 {
		t.Fatalf("RefundsResentBlind = %v, want R1: 2, R2: 1", got)
	}
}
