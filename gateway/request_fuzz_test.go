package gateway

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"regexp"
	"strconv"
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
// pass check, an oracle written apart from the validation (the raw body
// is given too, so a value can be compared with what the client wrote).
// Each request type is one call: its seeds, its validate and its
// invariants (see FuzzOrderRequest, FuzzRefundRequest).
func fuzzJSONRequest[T any](f *testing.F, seeds []string, validate func(T) error, check func(t *testing.T, body []byte, v T)) {
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
		check(t, body, v)
	})
}

// wechatOutTradeNo is WeChat Pay's rule for out_trade_no, written out here
// rather than taken from the code under test.
var wechatOutTradeNo = regexp.MustCompile(`^[0-9A-Za-z_|*-]{6,32}$`)

// plainAmount wants the body's field to be written as the plain decimal
// integer the request was read as: no float, exponent or string coerced
// into an amount.
func plainAmount(t *testing.T, body []byte, field string, got int64) {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("accepted a body that is not one JSON object: %v", err)
	}
	if w := string(raw[field]); w != strconv.FormatInt(got, 10) || got <= 0 || got > 10_000_000_000 {
		t.Fatalf("accepted %s written %q as %d", field, w, got)
	}
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
		// 2099-12-31T23:30Z, and 2100-01-01T00:30Z: the instant decides, not the year as written.
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"2100-01-01T00:30:00+01:00"}`,
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"2099-12-31T23:30:00-01:00"}`,
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"2030-01-01T00:00:00Z","extra":1}`,
		`{"out_trade_no":"order-000001","amount_total":100,"expire_at":"2030-01-01T00:00:00Z"} {}`,
		`{"out_trade_no":"订单0000001","amount_total":100,"expire_at":"2030-01-01T00:00:00Z"}`,
		`{"out_trade_no":null,"amount_total":"100"}`,
		`[]`, `null`, ``, `{`, `"x"`,
	}
	fuzzJSONRequest(f, seeds, func(o orderRequest) error { return o.validate(now) }, func(t *testing.T, body []byte, o orderRequest) {
		plainAmount(t, body, "amount_total", o.AmountTotal)
		switch {
		case !wechatOutTradeNo.MatchString(o.OutTradeNo):
			t.Fatalf("accepted out_trade_no %q", o.OutTradeNo)
		case len(o.PayerOpenID) > 128 || strings.Trim(o.PayerOpenID, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "":
			t.Fatalf("accepted payer_openid %q", o.PayerOpenID)
		case !o.ExpireAt.After(now) || o.ExpireAt.UTC().Year() >= 2100: // the instant: a zone must not move it past 2099
			t.Fatalf("accepted expire_at %v, not after %v or past 2099", o.ExpireAt, now)
		}
	})
}

// FuzzRefundRequest fuzzes POST /v1/refunds bodies.
func FuzzRefundRequest(f *testing.F) {
	seeds := []string{
		`{"out_trade_no":"order-000001","amount":100,"reason":"不想要了"}`,
		`{"out_trade_no":"order-000001","amount":100,"reason":"不想要了\u202e"}`,
		`{"out_trade_no":"order-000001","amount":1}`,
		"{ \"out_trade_no\" : \"order-000001\" ,\n\t\"amount\" : 100 }",
		`{"out_trade_no":"order-000001","AMOUNT":100}`,
		`{"out_trade_no":"order-000001","amount":1,"amount":100}`,
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
	fuzzJSONRequest(f, seeds, RefundParams.validate, func(t *testing.T, body []byte, p RefundParams) {
		plainAmount(t, body, "amount", p.Amount)
		switch {
		case !wechatOutTradeNo.MatchString(p.OutTradeNo):
			t.Fatalf("accepted out_trade_no %q", p.OutTradeNo)
		case len(p.Reason) > 80 || !utf8.ValidString(p.Reason):
			t.Fatalf("accepted reason %q (%d bytes)", p.Reason, len(p.Reason))
		case strings.ContainsFunc(p.Reason, shownOtherwise):
			t.Fatalf("accepted reason %q: it holds a character the payer would not see as stored", p.Reason)
		}
	})
}

// TestKeysMustBeExact: a key in another case, or one given twice, is
// refused: encoding/json would take "AMOUNT" for "amount" and keep the
// last of two, so the body a proxy or a log shows could differ from the
// one the gateway acts on.
func TestKeysMustBeExact(t *testing.T) {
	gin.SetMode(gin.TestMode)
	for _, body := range []string{
		`{"out_trade_no":"order-000001","AMOUNT":100}`,
		`{"out_trade_no":"order-000001","amount":1,"amount":9999}`,
		`{"out_trade_no":"order-000001","Amount":1}`,
	} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("POST", "/", strings.NewReader(body))
		var p RefundParams
		if err := DecodeJSON(c, 64<<10, &p); ErrorCode(err) != CodeInvalid {
			t.Errorf("%s: err = %v (read as %+v), want EINVALID", body, err, p)
		}
	}
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest("POST", "/", strings.NewReader(`{"out_trade_no":"order-000001","amount":1,"reason":"x"}`))
	var p RefundParams
	if err := DecodeJSON(c, 64<<10, &p); err != nil || p.Amount != 1 {
		t.Errorf("exact keys: %+v, %v", p, err)
	}
}

// shownOtherwise: a control character, a line or paragraph separator, or
// a bidirectional mark, embedding, override or isolate (Unicode's
// Bidi_Control list, written out).
func shownOtherwise(r rune) bool {
	switch {
	case r < 0x20 || (r >= 0x7f && r <= 0x9f), r == 0x2028, r == 0x2029, r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	default:
		return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
	}
}
