package wxpaysim_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestNotifyAckIs200Or204: WeChat Pay takes only 200 or 204 as a
// notification's receipt; a merchant answering another 2xx (202 for
// "queued", 201) gets it again, so the simulator redelivers too and does
// not count the notification acked.
func TestNotifyAckIs200Or204(t *testing.T) {
	for _, tc := range []struct {
		first    int
		attempts int
	}{
		{http.StatusAccepted, 2},
		{http.StatusCreated, 2},
		{http.StatusOK, 1},
		{http.StatusNoContent, 1},
	} {
		t.Run(http.StatusText(tc.first), func(t *testing.T) {
			m := &merchant{answers: []int{tc.first}} // then 204
			sim, _ := startSim(t, wxpaysim.Options{NotifyURL: m.serve(t).URL,
				NotifyRetryDelays: []time.Duration{10 * time.Millisecond}})
			if _, err := sim.Pay(context.Background(), "T1", 100, "o1", false); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the notification acked", func() bool { o, _ := sim.Order("T1"); return o.NotifyAcked })
			time.Sleep(50 * time.Millisecond) // a wrong redelivery would have come by now
			if o, _ := sim.Order("T1"); o.NotifyAttempts != tc.attempts || len(m.received()) != tc.attempts {
				t.Fatalf("first answer %d: %d attempts (%d received), want %d",
					tc.first, o.NotifyAttempts, len(m.received()), tc.attempts)
			}
		})
	}
}
