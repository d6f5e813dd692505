package gateway

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// fuzzJSONRequest fuzzes one strict JSON request type the way a handler
// reads it: DecodeJSON (size cap, unknown fields, trailing data), then
// validate. It must never panic; a body it refuses must be refused with a
// coded *Error (a clear 4xx, never a 500); whatever validate accepts must
// pass check. Each request type is one call: its seeds, its validate and
// its invariants (see FuzzOrderRequest, FuzzRefundRequest).
func fuzzJSONRequest[T any](f *testing.F, seeds []string, validate func(T) error, check func(t *testing.T, v T)) {
	gin.SetMode(gin.TestMode)
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("POST", "/", bytes.NewReader(body))
		var v T
		err := DecodeJSON(c, 64<<10, &v)
		if err == nil {
			err = validate(v)
		}
		if err != nil {
			if s := Status(err); s < 400 || s >= 500 {
				t.Fatalf("refused with status %d (%v), want a 4xx", s, err)
			}
			return
		}
		check(t, v)
	})
}

// FuzzOrderRequest fuzzes POST /v1/orders bodies.
func FuzzOrderRequest(f *testing.F) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	seeds := []string{
		`{"out_trade_no":"order-000001","amount_total":1999,"payer_openid":"o-1","expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":"order-000001","amount_total":1999,"expire_at":"2030-01-01T00:00:00+08:00"}`,
		`{"out_trade_no":"o","amount_total":1,"expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":"order-000001","amount_total":0,"expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":"order-000001","amount_total":-5,"expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":"order-000001","amount_total":1e3,"expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":"order-000001","amount_total":99999999999999999999,"expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"2020-01-01T00:00:00Z"}`,
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"tomorrow"}`,
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"2030-01-01T00:00:00Z","extra":1}`,
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"2030-01-01T00:00:00Z"} {}`,
		`{"out_trade_no":"订单0000001","amount_total":100,"expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":null,"amount_total":"100"}`,
		`[]`, `null`, ``, `{`, `"x"`,
	}
	fuzzJSONRequest(f, seeds, func(o orderRequest) error { return o.validate(now) }, func(t *testing.T, o orderRequest) {
		switch {
		case !ValidOutTradeNo(o.OutTradeNo):
			t.Fatalf("accepted out_trade_no %q", o.OutTradeNo)
		case o.AmountTotal <= 0 || o.AmountTotal > MaxAmount:
			t.Fatalf("accepted amount_total %d", o.AmountTotal)
		case len(o.PayerOpenID) > 128:
			t.Fatalf("accepted a %d-byte payer_openid", len(o.PayerOpenID))
		case !o.ExpireAt.After(now):
			t.Fatalf("accepted expire_at %v, not after %v", o.ExpireAt, now)
		}
	})
}

// FuzzRefundRequest fuzzes POST /v1/refunds bodies.
func FuzzRefundRequest(f *testing.F) {
	seeds := []string{
		`{"out_trade_no":"order-000001","amount":100,"reason":"不想要了"}`,
		`{"out_trade_no":"order-000001","amount":1}`,
		`{"out_trade_no":"order-000001","amount":0}`,
		`{"out_trade_no":"order-000001","amount":-1}`,
		`{"out_trade_no":"order-000001","amount":10000000001}`,
		`{"out_trade_no":"order-000001","amount":1.5}`,
		`{"out_trade_no":"bad no","amount":100}`,
		`{"out_trade_no":"order-000001","amount":100,"reason":"` + strings.Repeat("长", 81) + `"}`,
		`{"out_trade_no":"order-000001","amount":100,"refund_id":"x"}`,
		`{"out_trade_no":"order-000001","amount":100}{}`,
		`[]`, `null`, ``, `{`,
	}
	fuzzJSONRequest(f, seeds, RefundParams.validate, func(t *testing.T, p RefundParams) {
		switch {
		case !ValidOutTradeNo(p.OutTradeNo):
			t.Fatalf("accepted out_trade_no %q", p.OutTradeNo)
		case p.Amount <= 0 || p.Amount > MaxAmount:
			t.Fatalf("accepted amount %d", p.Amount)
		case utf8.RuneCountInString(p.Reason) > 80:
			t.Fatalf("accepted a %d-character reason", utf8.RuneCountInString(p.Reason))
		}
	})
}
