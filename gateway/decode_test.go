package gateway

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// TestDecodeJSONSpeaksTheAPI: a body the decoder refuses is answered in
// the API's words (field names as sent, JSON kinds), never with Go's type
// or struct names.
func TestDecodeJSONSpeaksTheAPI(t *testing.T) {
	type body struct {
		No     string    `json:"out_trade_no"`
		Amount int64     `json:"amount"`
		At     time.Time `json:"expire_at"`
	}
	for _, tc := range []struct{ in, want string }{
		{`{"out_trade_no":"a","amount":"1"}`, `malformed JSON: field "amount" must be a whole number in range`},
		{`{"amount":1.5}`, `malformed JSON: field "amount" must be a whole number in range`},
		{`{"amount":1e99}`, `malformed JSON: field "amount" must be a whole number in range`},
		{`{"out_trade_no":7}`, `malformed JSON: field "out_trade_no" must be a string`},
		{`[1]`, `malformed JSON: the body must be an object`},
		{` null `, `malformed JSON: the body must be an object`},
		{`{"out_trade_no":`, `malformed JSON: unexpected end of the body`},
		{``, `malformed JSON: empty body`},
		{`{"amount":1,}`, `malformed JSON: syntax error at byte 13`},
		{`{"x":1}`, `malformed JSON: unknown field "x"`},
		{`{"expire_at":"tomorrow"}`, `malformed JSON: times are RFC 3339, e.g. 2026-11-30T20:00:00+08:00`},
		{`{"expire_at":1767225600}`, `malformed JSON: times are RFC 3339, e.g. 2026-11-30T20:00:00+08:00`},
		{`{"expire_at":{}}`, `malformed JSON: times are RFC 3339, e.g. 2026-11-30T20:00:00+08:00`},
		// One object only: a proxy or a log must not read another value
		// than the gateway acts on.
		{`{"amount":1}}`, `malformed JSON: trailing data`},
		{`{"amount":1}]`, `malformed JSON: trailing data`},
		{`{"amount":30}}{"amount":99999}`, `malformed JSON: trailing data`},
		{`{"amount":30} {"amount":99999}`, `malformed JSON: trailing data`},
	} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("POST", "/", strings.NewReader(tc.in))
		var v body
		err := DecodeJSON(c, 1<<10, &v)
		e, ok := err.(*Error)
		if !ok || e.Code != CodeInvalid || e.Message != tc.want {
			t.Errorf("%s: %v, want %q", tc.in, err, tc.want)
		}
		if ok && (strings.Contains(e.Message, "Go ") || strings.Contains(e.Message, "int64") || strings.Contains(e.Message, "body.")) {
			t.Errorf("%s: %q names Go internals", tc.in, e.Message)
		}
	}
}

// TestDecodeJSONTakesTrailingWhitespace: blanks after the one object are
// no data.
func TestDecodeJSONTakesTrailingWhitespace(t *testing.T) {
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest("POST", "/", strings.NewReader("{\"amount\":30} \r\n\t"))
	var v struct {
		Amount int64 `json:"amount"`
	}
	if err := DecodeJSON(c, 1<<10, &v); err != nil || v.Amount != 30 {
		t.Fatalf("decode = %v, amount %d", err, v.Amount)
	}
}

// TestDecodeJSONRefusesOtherMediaTypes: a body labelled as anything but
// JSON (a form, text, JSON in another charset) is 415, not read as JSON
// anyway; a body without a Content-Type is read as JSON.
func TestDecodeJSONRefusesOtherMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		ctype string
		ok    bool
	}{
		{"", true},
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON; charset=UTF-8", true},
		{"text/plain", false},
		{"text/plain; charset=utf-8", false},
		{"application/x-www-form-urlencoded", false},
		{"multipart/form-data; boundary=x", false},
		{"application/json; charset=iso-8859-1", false},
		{"application/json;;", false},
	} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("POST", "/", strings.NewReader(`{"amount":30}`))
		if tc.ctype != "" {
			c.Request.Header.Set("Content-Type", tc.ctype)
		}
		var v struct {
			Amount int64 `json:"amount"`
		}
		err := DecodeJSON(c, 1<<10, &v)
		switch {
		case tc.ok && (err != nil || v.Amount != 30):
			t.Errorf("%q: %v (amount %d), want it read", tc.ctype, err, v.Amount)
		case !tc.ok && (ErrorCode(err) != CodeUnsupportedType || Status(err) != 415):
			t.Errorf("%q: %v (amount %d), want 415 %s", tc.ctype, err, v.Amount, CodeUnsupportedType)
		}
	}
}

// TestDecodeJSONRefusesTwoContentTypes: a body labelled twice, as JSON and
// as something else, is 415 like one labelled only as the other: the
// handler read the first header, and a proxy or firewall keeping the last
// saw a form or text where the gateway acted on JSON.
func TestDecodeJSONRefusesTwoContentTypes(t *testing.T) {
	for _, two := range [][]string{
		{"application/json", "application/x-www-form-urlencoded"},
		{"application/json", "text/plain"},
		{"application/json", "application/json"},
	} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("POST", "/", strings.NewReader(`{"amount":30}`))
		c.Request.Header["Content-Type"] = two
		var v struct {
			Amount int64 `json:"amount"`
		}
		if err := DecodeJSON(c, 1<<10, &v); ErrorCode(err) != CodeUnsupportedType || Status(err) != 415 {
			t.Errorf("%q: %v (amount %d), want 415 %s", two, err, v.Amount, CodeUnsupportedType)
		}
	}
}

// TestDecodeJSONRefusesContentEncodings: a body labelled with a content
// coding (gzip, deflate, …) is 415, as RFC 9110 has it: the gateway
// decodes none. Before, one labelled gzip whose bytes were plain JSON was
// acted on (a proxy decoding it saw no JSON), and a body really gzipped
// was answered "malformed JSON: syntax error", which did not say why.
func TestDecodeJSONRefusesContentEncodings(t *testing.T) {
	for _, tc := range []struct {
		enc []string
		ok  bool
	}{
		{nil, true},
		{[]string{"identity"}, true},
		{[]string{"gzip"}, false},
		{[]string{"deflate"}, false},
		{[]string{"br"}, false},
		{[]string{"identity", "gzip"}, false},
		{[]string{"identity, gzip"}, false},
	} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("POST", "/", strings.NewReader(`{"amount":30}`))
		c.Request.Header.Set("Content-Type", "application/json")
		if tc.enc != nil {
			c.Request.Header["Content-Encoding"] = tc.enc
		}
		var v struct {
			Amount int64 `json:"amount"`
		}
		err := DecodeJSON(c, 1<<10, &v)
		switch {
		case tc.ok && (err != nil || v.Amount != 30):
			t.Errorf("%q: %v (amount %d), want it read", tc.enc, err, v.Amount)
		case !tc.ok && (ErrorCode(err) != CodeUnsupportedType || Status(err) != 415 || v.Amount != 0):
			t.Errorf("%q: %v (amount %d), want 415 %s", tc.enc, err, v.Amount, CodeUnsupportedType)
		}
	}
}
