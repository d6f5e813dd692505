package main

import (
	"fmt"
	"strings"
	"testing"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRefundRefusedByWeChatPayIsLogged: WeChat Pay refuses a refund in an
// answer it signed (403 NOT_ENOUGH: the merchant's balance cannot pay
// refunds, and every refund is refused until someone tops it up). The
// user gets 422 and the refund is FAILED; the on-call reads why in a warn
// line naming WeChat Pay's code and the refund, not only a FAILED count.
func TestRefundRefusedByWeChatPayIsLogged(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			logs := captureLogs(t)
			e := startRefundEnv(t, b, nil)
			openid := "o-not-enough"
			no, tok := e.pay(t, openid, 100), token(t, openid)
			e.sim.SetFaults(wxpaysim.Faults{PathPrefix: "/v3/refund/domestic/refunds", NotEnoughNext: 1})
			a := e.refund(t, tok, "k-not-enough-"+b.tag(), refundBody(no, 30))
			if a.status != 422 || !strings.Contains(string(a.body), `"state":"FAILED"`) {
				t.Fatalf("refund: %d %s, want 422 FAILED", a.status, a.body)
			}
			lines := logLines(t, logs.String(), "refund refused by WeChat Pay")
			if len(lines) != 1 {
				t.Fatalf("%d warn lines of the refusal, want 1; logs:\n%s", len(lines), logs.String())
			}
			l := lines[0]
			if l["level"] != "WARN" || l["out_trade_no"] != no || !strings.Contains(fmt.Sprint(l["refusal"]), "NOT_ENOUGH") {
				t.Fatalf("refusal logged as %v, want a WARN naming the order and NOT_ENOUGH", l)
			}
		})
	}
}
