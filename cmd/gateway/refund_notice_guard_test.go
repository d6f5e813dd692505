package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// TestRefundNoticeThatDisagreesIsNotRecorded: signed REFUND.* notices of
// a PROCESSING refund of 30 fen that contradict themselves or the ledger
// are not recorded: an event REFUND.SUCCESS whose resource says
// refund_status CLOSED (which way did the money go?), a REFUND.SUCCESS of
// 29 fen (another refund than the one the ledger holds; flagged
// REFUND_AMOUNT_MISMATCH), and one of 0 fen. Each is refused with a non-2xx
// (WeChat Pay delivers it again, a person looks), the refund stays
// PROCESSING with its 30 fen counted, and no notice is stored.
func TestRefundNoticeThatDisagreesIsNotRecorded(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, nil)
			no := e.pay(t, "o-disagree", 100)
			a := e.refund(t, token(t, "o-disagree"), "k-disagree", refundBody(no, 30))
			if a.status != 201 {
				t.Fatalf("refund: %d %s", a.status, a.body)
			}
			rno, _ := a.json(t)["out_refund_no"].(string)
			r := ledgerRefund(t, e.m, rno)
			if r.State != ledger.RefundProcessing {
				t.Fatalf("refund is %s, want PROCESSING", r.State)
			}
			notice := func(event, status string, amount int64) wxpaysim.Notification {
				rn := wxpaysim.RefundNotice{MchID: e.k.MchID, OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID,
					OutRefundNo: r.OutRefundNo, RefundID: "50" + r.OutRefundNo, RefundStatus: status,
					SuccessTime: time.Now().Format(time.RFC3339), UserReceivedAccount: "支付用户零钱",
					Amount: wxpaysim.RefundNoticeAmount{Total: r.Total, Refund: amount, PayerTotal: r.Total, PayerRefund: amount}}
				plain, err := json.Marshal(rn)
				if err != nil {
					t.Fatal(err)
				}
				return mustNotification(e.k.NewNotification("", event, "refund", plain, wxpaysim.PublicKeyMode(), time.Now()))
			}
			cases := []struct {
				name string
				n    wxpaysim.Notification
			}{
				{"REFUND.SUCCESS saying CLOSED", notice("REFUND.SUCCESS", "CLOSED", 30)},
				{"REFUND.CLOSED saying SUCCESS", notice("REFUND.CLOSED", "SUCCESS", 30)},
				{"SUCCESS of another amount", notice("REFUND.SUCCESS", "SUCCESS", 29)},
				{"SUCCESS of no amount", notice("REFUND.SUCCESS", "SUCCESS", 0)},
			}
			ctx := context.Background()
			for _, tc := range cases {
				if code, body := post(t, e.m.URL()+refundNotifyPath, tc.n); code/100 == 2 {
					t.Errorf("%s: answered %d %v, want a refusal (not recorded)", tc.name, code, body)
				}
				if got := ledgerRefund(t, e.m, rno); got.State != ledger.RefundProcessing || got.Version != r.Version {
					t.Fatalf("%s: refund %s at version %d, want PROCESSING at %d", tc.name, got.State, got.Version, r.Version)
				}
				if p, _ := e.m.Store.Payment(ctx, no); p.RefundedTotal != 30 {
					t.Fatalf("%s: refunded_total %d, want 30", tc.name, p.RefundedTotal)
				}
			}
			if notices, _ := e.m.Store.Notices(ctx, no); len(notices) != 1 { // the payment's
				t.Fatalf("%d notices stored, want only the payment's", len(notices))
			}
			as, _ := e.m.Store.Anomalies(ctx, no)
			mismatch := 0
			for _, an := range as {
				if an.Kind == ledger.AnomalyRefundAmountMismatch {
					mismatch++
				}
			}
			if mismatch != 1 {
				t.Fatalf("anomalies %+v, want one %s", as, ledger.AnomalyRefundAmountMismatch)
			}
		})
	}
}
