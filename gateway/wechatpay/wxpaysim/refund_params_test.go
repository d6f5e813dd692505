package wxpaysim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRefundParamFormats: a refund application with a field WeChat Pay's
// parameter table refuses is answered 400 PARAM_ERROR, signed, and
// applies nothing; the longest well-formed fields are accepted.
func TestRefundParamFormats(t *testing.T) {
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	order := strings.Repeat("T", 32)
	if _, err := sim.Pay(ctx, order, 100, "", true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		edit  func(r *refunddomestic.CreateRequest)
		valid bool
	}{
		{"longest fields", func(r *refunddomestic.CreateRequest) {
			r.OutRefundNo = core.String(strings.Repeat("R", 60) + "_-|*")
			r.Reason = core.String(strings.Repeat("退", 26) + "ab") // 80 bytes
			r.NotifyUrl = core.String("https://merchant.example/v1/wechatpay/notify/refund")
		}, true},
		{"out_refund_no of 65", func(r *refunddomestic.CreateRequest) { r.OutRefundNo = core.String(strings.Repeat("R", 65)) }, false},
		{"out_refund_no with a dot", func(r *refunddomestic.CreateRequest) { r.OutRefundNo = core.String("RF.1") }, false},
		{"out_refund_no with a colon", func(r *refunddomestic.CreateRequest) { r.OutRefundNo = core.String("RF:1") }, false},
		{"out_trade_no of 33", func(r *refunddomestic.CreateRequest) { r.OutTradeNo = core.String(order + "T") }, false},
		{"out_trade_no with @", func(r *refunddomestic.CreateRequest) { r.OutTradeNo = core.String("T@1") }, false},
		{"reason of 81 bytes", func(r *refunddomestic.CreateRequest) { r.Reason = core.String(strings.Repeat("退", 27)) }, false},
		{"notify_url with a query", func(r *refunddomestic.CreateRequest) {
			r.NotifyUrl = core.String("https://merchant.example/notify?kind=refund")
		}, false},
		{"notify_url not absolute", func(r *refunddomestic.CreateRequest) { r.NotifyUrl = core.String("/notify/refund") }, false},
		{"currency other than CNY", func(r *refunddomestic.CreateRequest) { r.Amount.Currency = core.String("USD") }, false},
		{"plain", func(*refunddomestic.CreateRequest) {}, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := refunddomestic.CreateRequest{
				OutTradeNo: core.String(order), OutRefundNo: core.String("R" + string(rune('A'+i))),
				Amount: &refunddomestic.AmountReq{Refund: core.Int64(1), Total: core.Int64(100), Currency: core.String("CNY")},
			}
			tc.edit(&req)
			before := len(sim.Refunds())
			_, _, err := (&refunddomestic.RefundsApiService{Client: c}).Create(ctx, req)
			switch {
			case tc.valid && err != nil:
				t.Fatalf("err=%v, want success", err)
			case !tc.valid && !isSigned(400, "PARAM_ERROR")(err):
				t.Fatalf("err=%v, want a signed 400 PARAM_ERROR", err)
			case !tc.valid && len(sim.Refunds()) != before:
				t.Fatal("a refused application made a refund")
			}
		})
	}
	if got := sim.RefundsRefused()["param_error"]; got != 9 {
		t.Fatalf(`RefundsRefused()["param_error"]=%d, want 9`, got)
	}
}
