package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// outTradeNoPattern is WeChat Pay's rule: 6–32 of letters, digits, _-|*.
var outTradeNoPattern = regexp.MustCompile(`^[A-Za-z0-9_\-|*]{6,32}$`)

// ValidOutTradeNo reports whether s is a well-formed out_trade_no.
func ValidOutTradeNo(s string) bool { return outTradeNoPattern.MatchString(s) }

// openIDPattern is the shape of a WeChat openid: letters, digits, - and
// _. Holding it to that keeps an openid the same key in every database:
// MySQL's PAD SPACE collations take "o1" and "o1 " for one value, SQLite
// does not, and the openid scopes idempotency keys.
var openIDPattern = regexp.MustCompile(`^[A-Za-z0-9_\-]{1,128}$`)

// ValidOpenID reports whether s is a well-formed openid.
func ValidOpenID(s string) bool { return openIDPattern.MatchString(s) }

// MaxAmount caps any amount at 100 million yuan, far above real orders.
const MaxAmount int64 = 10_000_000_000

type orderRequest struct {
	OutTradeNo  string    `json:"out_trade_no"`
	AmountTotal int64     `json:"amount_total"`
	PayerOpenID string    `json:"payer_openid"`
	ExpireAt    time.Time `json:"expire_at"`
}

// badExpireAt refuses an expire_at: malformed, past 2099, or, for an
// order not registered yet, not in the future.
const badExpireAt = "expire_at must be an RFC 3339 time in the future, before 2100"

// validate checks the request's shape; expire_at must come after
// earliest. The handler gives the zero time: whether expire_at must still
// be ahead depends on whether the order is new, which the ledger decides
// (RegisterOrderBeforeExpiry): a retry of a registered order arriving
// after its expire_at is answered the stored order.
func (o orderRequest) validate(earliest time.Time) error {
	switch {
	case !ValidOutTradeNo(o.OutTradeNo):
		return &Error{Code: CodeInvalid, Message: "out_trade_no must be 6-32 of A-Z a-z 0-9 _ - | *"}
	case o.AmountTotal <= 0 || o.AmountTotal > MaxAmount:
		return &Error{Code: CodeInvalid, Message: "amount_total must be a positive number of fen"}
	case o.PayerOpenID != "" && !ValidOpenID(o.PayerOpenID):
		return &Error{Code: CodeInvalid, Message: "payer_openid must be 1-128 of A-Z a-z 0-9 _ -"}
	case o.ExpireAt.IsZero() || !o.ExpireAt.After(earliest) || !o.ExpireAt.Before(latest):
		return &Error{Code: CodeInvalid, Message: badExpireAt}
	}
	return nil
}

// DecodeJSON reads a JSON body strictly: unknown fields and trailing data
// are errors, and so (415) is a body labelled as another media type than
// JSON in UTF-8, or labelled twice (a proxy keeping the last header would
// see another type than this handler, which reads the first), or with a
// content coding, which the gateway does not decode (RFC 9110's 415); one
// without a Content-Type is read as JSON.
func DecodeJSON(c *gin.Context, max int64, v any) error {
	if len(c.Request.Header.Values("Content-Type")) > 1 || !jsonContentType(c.GetHeader("Content-Type")) {
		return &Error{Code: CodeUnsupportedType, Message: "Content-Type must be application/json"}
	}
	if !identityCoding(c.Request.Header.Values("Content-Encoding")) {
		return &Error{Code: CodeUnsupportedType, Message: "Content-Encoding is not supported: send the body uncompressed"}
	}
	body, err := ReadBody(c, max)
	if err != nil {
		return err
	}
	// The decoder would turn each byte that is not UTF-8 into U+FFFD: a
	// refund's reason in GBK, say, would reach WeChat Pay (and the payer)
	// as other text than was sent.
	if !utf8.Valid(body) {
		return &Error{Code: CodeInvalid, Message: "malformed JSON: the body must be UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeInvalid, "malformed JSON: "+jsonProblem(err), err)
	}
	// null decodes into a struct as nothing at all: it would be refused
	// for the first field it lacks, not for what it is.
	if bytes.Equal(bytes.Trim(body, " \t\r\n"), []byte("null")) {
		return &Error{Code: CodeInvalid, Message: "malformed JSON: the body must be an object"}
	}
	// Token, not More: More is false at a '}' or ']', and a body such as
	// {"amount":30}}{"amount":99999} would pass.
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Code: CodeInvalid, Message: "malformed JSON: trailing data"}
	}
	return exactKeys(body, v)
}

// jsonContentType accepts no Content-Type, or application/json with no
// charset or UTF-8's: a form or text body is no JSON the client meant,
// and JSON in another charset would be read as other text than was sent.
func jsonContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// identityCoding reports whether Content-Encoding lines name no coding
// but identity.
func identityCoding(lines []string) bool {
	for _, l := range lines {
		for _, c := range strings.Split(l, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return false
			}
		}
	}
	return true
}

// jsonProblem says what is wrong with a body in the API's words: the
// decoder's own message names Go types and struct fields.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	var timeErr *time.ParseError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return "field " + strconv.Quote(typeErr.Field) + " must be " + jsonKind(typeErr.Type)
	case errors.As(err, &typeErr):
		return "the body must be " + jsonKind(typeErr.Type)
	case errors.As(err, &syntaxErr):
		return "syntax error at byte " + strconv.FormatInt(syntaxErr.Offset, 10)
	case errors.As(err, &timeErr), strings.HasPrefix(err.Error(), "Time.UnmarshalJSON: "): // a number, say, for a time
		return "times are RFC 3339, e.g. 2026-11-30T20:00:00+08:00"
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of the body"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "unreadable body"
}

// jsonKind names the JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8,
		reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// exactKeys refuses a top-level key not spelled exactly as one of v's
// fields (encoding/json also takes "AMOUNT" for "amount") or given twice
// (it keeps the last): a proxy, a log or a person reading the body must
// see the values the gateway acts on. body has decoded into v already.
func exactKeys(body []byte, v any) error {
	names := jsonNames(reflect.TypeOf(v))
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // null: nothing to check
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Errorf(CodeInvalid, "malformed JSON: "+jsonProblem(err), err)
		}
		key, _ := tok.(string)
		switch {
		case !names[key]:
			return &Error{Code: CodeInvalid, Message: "malformed JSON: unknown field " + strconv.Quote(key)}
		case seen[key]:
			return &Error{Code: CodeInvalid, Message: "malformed JSON: field " + strconv.Quote(key) + " given twice"}
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return Errorf(CodeInvalid, "malformed JSON: "+jsonProblem(err), err)
		}
	}
	return nil
}

// jsonNames lists the JSON names of a struct's fields.
func jsonNames(t reflect.Type) map[string]bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]bool{}
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case name == "":
			out[f.Name] = true
		default:
			out[name] = true
		}
	}
	return out
}

// registerOrder records an order the business expects to be paid.
func (d *Deps) registerOrder(c *gin.Context) {
	var req orderRequest
	if err := DecodeJSON(c, d.MaxBodyBytes, &req); err != nil {
		writeError(c, err)
		return
	}
	if err := req.validate(time.Time{}); err != nil {
		writeError(c, err)
		return
	}
	p, err := d.Store.RegisterOrderBeforeExpiry(c.Request.Context(), ledger.Order{OutTradeNo: req.OutTradeNo,
		AmountTotal: req.AmountTotal, PayerOpenID: req.PayerOpenID, ExpireAt: req.ExpireAt})
	switch {
	case err == nil:
		c.JSON(http.StatusCreated, p)
	case errors.Is(err, ledger.ErrAlreadyRecorded):
		c.JSON(http.StatusOK, p)
	case errors.Is(err, ledger.ErrExpireAtPassed):
		writeError(c, Errorf(CodeInvalid, badExpireAt, err))
	case errors.Is(err, ledger.ErrConflict):
		writeError(c, Errorf(CodeConflict, "order already registered with other values", err))
	default:
		writeError(c, ledgerError(err))
	}
}

// getPayment shows finance a payment with its history and anomalies.
func (d *Deps) getPayment(c *gin.Context) {
	no := c.Param("out_trade_no")
	if !keyPattern.MatchString(no) {
		writeError(c, invalid("out_trade_no must be 1-64 of A-Z a-z 0-9 _ - | * @ . :"))
		return
	}
	ctx := c.Request.Context()
	p, err := d.Store.Payment(ctx, no)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	history, err := d.Store.History(ctx, no)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	anomalies, err := d.Store.Anomalies(ctx, no)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	refunds, err := d.Store.Refunds(ctx, no)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	c.JSON(http.StatusOK, gin.H{"payment": p, "history": history, "anomalies": anomalies, "refunds": refunds})
}
