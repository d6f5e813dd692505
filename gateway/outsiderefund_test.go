package gateway_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestRefundNoticeAfterPaymentNotice: the payment callback was recorded
// (its stock confirmation pending), then the merchant refunded the order
// by hand in the merchant platform and WeChat Pay's REFUND.SUCCESS notice
// of that refund, which the gateway never made, arrives. It is answered
// 204 and stored (UNKNOWN_REFUND), and the confirmation is held dead with
// REFUNDED_OUTSIDE flagged, as when the refund notice comes first: goods
// must not ship for money that went back. Redeliveries of either notice,
// to either instance, change nothing.
func TestRefundNoticeAfterPaymentNotice(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		e, other := newRFEdge(t, keys, s, 1), newRFEdge(t, keys, s, 1)
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "rfa-reg", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"rfa-reg", "rfa-new"} {
			pay, refund := rfPaymentNotice(t, keys, no, "SUCCESS"), rfRefundNotice(t, keys, no, "out-"+no)
			if code := e.post(t, "payment", pay); code != http.StatusNoContent {
				t.Fatalf("%s: payment notice answered %d, want 204", no, code)
			}
			if got := rfLedger(t, s, no); got != rfShipped() {
				t.Fatalf("%s paid: %s, want %s", no, got, rfShipped())
			}
			if code := e.post(t, "refund", refund); code != http.StatusNoContent {
				t.Fatalf("%s: refund notice answered %d, want 204", no, code)
			}
			want := rfHeld(no, 2, "out-"+no)
			if got := rfLedger(t, s, no); got != want {
				t.Fatalf("%s, refunded outside the gateway after its payment:\n got %s\nwant %s", no, got, want)
			}
			redeliverBoth(t, s, no, pay, refund, want, e, other, other)
		}
	})
}
