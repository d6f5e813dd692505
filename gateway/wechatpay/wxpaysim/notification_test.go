package wxpaysim_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// sdkNotifyHandler is how a merchant verifies notifications with wechatpay-go.
func sdkNotifyHandler(t *testing.T, k *wxpaysim.Keys) *notify.Handler {
	t.Helper()
	v := verifiers.NewSHA256WithRSACombinedVerifier(
		core.NewCertificateMapWithList(k.Certificates()), k.PublicKeyID, *k.PublicKey())
	h, err := notify.NewRSANotifyHandler(k.APIv3Key, v)
	if err != nil {
		t.Fatalf("NewRSANotifyHandler: %v", err)
	}
	return h
}

func notifyRequest(n wxpaysim.Notification) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/notify", bytes.NewReader(n.Body))
	r.Header = n.Header.Clone()
	return r
}

func TestNotificationVerifiesWithSDK(t *testing.T) {
	k := testKeys(t)
	h := sdkNotifyHandler(t, k)
	tx := wxpaysim.Transaction{
		AppID: k.AppID, MchID: k.MchID, OutTradeNo: "T1", TransactionID: "4200000001",
		TradeState: "SUCCESS", Payer: &wxpaysim.Payer{OpenID: "o1"},
		Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100, Currency: "CNY", PayerCurrency: "CNY"},
	}
	tests := []struct {
		name       string
		mode       wxpaysim.SignMode
		wantSerial string
		age        time.Duration
		tamper     bool
		wantErr    bool
	}{
		{name: "public key", mode: wxpaysim.PublicKeyMode(), wantSerial: k.PublicKeyID},
		{name: "cert 0", mode: wxpaysim.CertMode(0), wantSerial: k.Certs[0].Serial},
		{name: "cert 1", mode: wxpaysim.CertMode(1), wantSerial: k.Certs[1].Serial},
		{name: "tampered body", mode: wxpaysim.PublicKeyMode(), wantSerial: k.PublicKeyID, tamper: true, wantErr: true},
		{name: "six minutes old", mode: wxpaysim.CertMode(0), wantSerial: k.Certs[0].Serial, age: 6 * time.Minute, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := k.PaymentNotification(tx, tc.mode, time.Now().Add(-tc.age))
			if err != nil {
				t.Fatalf("PaymentNotification: %v", err)
			}
			if got := n.Header.Get("Wechatpay-Serial"); got != tc.wantSerial {
				t.Fatalf("serial=%s, want %s", got, tc.wantSerial)
			}
			if tc.tamper {
				n.Body = bytes.Replace(n.Body, []byte("TRANSACTION.SUCCESS"), []byte("TRANSACTION.SUCCESX"), 1)
			}
			var got wxpaysim.Transaction
			req, err := h.ParseNotifyRequest(context.Background(), notifyRequest(n), &got)
			if tc.wantErr {
				if err == nil {
					t.Fatal("ParseNotifyRequest succeeded, want error")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNotifyRequest: %v", err)
			}
			if req.ID != n.ID || req.EventType != "TRANSACTION.SUCCESS" || req.Resource.OriginalType != "transaction" {
				t.Fatalf("envelope=%+v", req)
			}
			if got.OutTradeNo != "T1" || got.Amount.Total != 100 || got.Payer.OpenID != "o1" {
				t.Fatalf("plaintext=%+v", got)
			}
		})
	}
}

func TestNotificationResignKeepsBody(t *testing.T) {
	k := testKeys(t)
	n, err := k.NewNotification("", "TRANSACTION.SUCCESS", "transaction", []byte(`{"out_trade_no":"T1"}`), wxpaysim.CertMode(0), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	again, err := n.Resign(k, wxpaysim.PublicKeyMode(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != n.ID || !bytes.Equal(again.Body, n.Body) {
		t.Fatal("resign changed id or body")
	}
	if again.Header.Get("Wechatpay-Nonce") == n.Header.Get("Wechatpay-Nonce") ||
		again.Header.Get("Wechatpay-Signature") == n.Header.Get("Wechatpay-Signature") {
		t.Fatal("resign kept nonce or signature")
	}
	var m map[string]any
	if _, err := sdkNotifyHandler(t, k).ParseNotifyRequest(context.Background(), notifyRequest(again), &m); err != nil {
		t.Fatalf("resigned notification does not verify: %v", err)
	}
}

func TestRefundNotificationEvents(t *testing.T) {
	k := testKeys(t)
	h := sdkNotifyHandler(t, k)
	for _, status := range []string{"SUCCESS", "ABNORMAL", "CLOSED", "PROCESSING"} {
		t.Run(status, func(t *testing.T) {
			n, err := k.RefundNotification(wxpaysim.RefundNotice{OutRefundNo: "R1", RefundStatus: status,
				Amount: wxpaysim.RefundNoticeAmount{Total: 100, Refund: 30}}, wxpaysim.PublicKeyMode(), time.Now())
			if status == "PROCESSING" {
				if err == nil {
					t.Fatal("PROCESSING has no notification, want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			req, err := h.ParseNotifyRequest(context.Background(), notifyRequest(n), &got)
			if err != nil {
				t.Fatalf("ParseNotifyRequest: %v", err)
			}
			if req.EventType != "REFUND."+status || got["refund_status"] != status || req.Resource.OriginalType != "refund" {
				t.Fatalf("event=%s plaintext=%v", req.EventType, got)
			}
		})
	}
}
