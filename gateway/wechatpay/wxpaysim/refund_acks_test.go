package wxpaysim_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRefundNotifyAcks: every refund notification POST answered 2xx is
// kept with its notification id and when the 2xx came (a refused POST is
// not), through the Go API and GET /sim/refunds; NotifyAcked still says
// whether any was.
func TestRefundNotifyAcks(t *testing.T) {
	m := &merchant{answers: []int{http.StatusInternalServerError}} // the first POST, then 204
	sim, srv, c := refundSim(t, m)
	ctx := context.Background()
	sim.SetFaults(wxpaysim.Faults{RefundAbnormalNext: 1})
	if _, err := createRefund(ctx, c, "T1", "R1", 30, 100); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	sim.SettleRefunds() // REFUND.ABNORMAL: 500, then redelivered and acked
	acks := func() []wxpaysim.NotifyAck { return sim.Refunds()[0].NotifyAcks }
	waitFor(t, "the ABNORMAL notification acked", func() bool { return len(acks()) == 1 })
	if r := sim.Refunds()[0]; r.NotifyAttempts != 2 || !r.NotifyAcked {
		t.Fatalf("after a 500 and a 204: %d attempts, acked %v", r.NotifyAttempts, r.NotifyAcked)
	}
	if err := sim.ResolveAbnormal("R1", wxpaysim.RefundSuccess); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SUCCESS notification acked", func() bool { return len(acks()) == 2 })
	after := time.Now()
	got, sent := acks(), m.received()
	if len(sent) != 3 || sent[0].ID != sent[1].ID {
		t.Fatalf("merchant got %+v, want the ABNORMAL notification twice then the SUCCESS one", sent)
	}
	for i, want := range []received{sent[1], sent[2]} {
		a := got[i]
		if a.NotifyID != want.ID || a.EventType != want.EventType || a.At.Before(before) || a.At.After(after) {
			t.Errorf("ack %d = %+v, want %s %s between %v and %v", i, a, want.ID, want.EventType, before, after)
		}
	}
	if got[0].At.After(got[1].At) {
		t.Errorf("acks out of order: %+v", got)
	}
	got[0].NotifyID = "changed by the caller"
	if acks()[0].NotifyID != sent[1].ID {
		t.Error("Refunds shares its acks with the simulator")
	}
	var listed []wxpaysim.RefundRecord
	getJSON(t, srv.URL+"/sim/refunds", &listed)
	if len(listed) != 1 || !sameAcks(listed[0].NotifyAcks, acks()) {
		t.Errorf("GET /sim/refunds acks %+v, want %+v", listed, acks())
	}
}

func sameAcks(a, b []wxpaysim.NotifyAck) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].NotifyID != b[i].NotifyID || a[i].EventType != b[i].EventType || !a[i].At.Equal(b[i].At) {
			return false
		}
	}
	return true
}
