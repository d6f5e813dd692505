// Package gateway is the HTTP edge: gin handlers, API-key auth, WeChat Pay
// notification processing, locks and replay checks. It declares the
// adapters it consumes (Notices, Gate, Locker); cmd/gateway wires them.
package gateway

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// Stable error codes clients can switch on.
const (
	CodeInvalid       = "EINVALID"
	CodeTooLarge      = "ETOO_LARGE"
	CodeSignature     = "ESIGNATURE"
	CodeStale         = "ESTALE"
	CodeReplay        = "EREPLAY"
	CodeDecrypt       = "EDECRYPT"
	CodeMerchant      = "EMERCHANT"
	CodeConflict      = "ECONFLICT"
	CodeUnauthorized  = "EUNAUTHORIZED"
	CodeForbidden     = "EFORBIDDEN"
	CodeNotFound      = "ENOTFOUND"
	CodeUnavailable   = "EUNAVAILABLE"
	CodeInternal      = "EINTERNAL"
	CodeRateLimited   = "ERATE_LIMITED"
	CodeInFlight      = "EIN_FLIGHT"
	CodeKeyReused     = "EIDEMPOTENCY_MISMATCH"
	CodeUnprocessable = "EUNPROCESSABLE"
	CodeDayNotOver    = "EDAY_NOT_OVER" // a reconciliation of today or a future day
	// The day's trade bill cannot be read: its report is stored UNREADABLE
	// and a person must act; running it again at once cannot help.
	CodeBillUnreadable = "EBILL_UNREADABLE"
	// A request body labelled as another media type than JSON.
	CodeUnsupportedType = "EUNSUPPORTED_MEDIA_TYPE"
	// A change that must name the version it was decided on (If-Match)
	// came without one.
	CodePreconditionRequired = "EPRECONDITION_REQUIRED"
	// The record changed since the version the caller named: look again.
	CodePreconditionFailed = "EPRECONDITION_FAILED"
)

var statusByCode = map[string]int{
	CodeInvalid: 400, CodeTooLarge: 413, CodeSignature: 401, CodeStale: 401, CodeReplay: 401,
	CodeDecrypt: 400, CodeMerchant: 400, CodeConflict: 409, CodeUnauthorized: 401, CodeForbidden: 403,
	CodeNotFound: 404, CodeUnavailable: 503, CodeInternal: 500, CodeRateLimited: 429, CodeInFlight: 409,
	CodeKeyReused: 422, CodeUnprocessable: 422, CodeDayNotOver: 400, CodeBillUnreadable: 422, CodeUnsupportedType: 415,
	CodePreconditionRequired: 428, CodePreconditionFailed: 412,
}

// Error is an error with a stable code and a message safe to show clients.
type Error struct {
	Code    string
	Message string
	Err     error // the cause, logged but never shown
	// RetryAfter, when set, is sent as the Retry-After header (whole seconds).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a cause.
func Errorf(code, message string, cause error) *Error {
	return &Error{Code: code, Message: message, Err: cause}
}

// ErrorCode returns the code of err, EINTERNAL for errors without one.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Status returns the HTTP status for err.
func Status(err error) int {
	if s, ok := statusByCode[ErrorCode(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func publicMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// writeError answers an API client with {"code","message"}.
func writeError(c *gin.Context, err error) {
	status := Status(err)
	logError(c, status, err)
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int(e.RetryAfter/time.Second)))
	}
	c.AbortWithStatusJSON(status, gin.H{"code": ErrorCode(err), "message": publicMessage(err)})
}

// writeWechatFail answers WeChat Pay the way its protocol asks for a
// redelivery: a 4xx/5xx with {"code":"FAIL","message":…}. Our own code
// goes in "reason".
func writeWechatFail(c *gin.Context, err error) {
	status := Status(err)
	logError(c, status, err)
	c.AbortWithStatusJSON(status, gin.H{"code": "FAIL", "message": publicMessage(err), "reason": ErrorCode(err)})
}

// maxLoggedError caps a logged error: some quote caller-sent text (the SDK
// quotes a notification's Request-Id header whole).
const maxLoggedError = 512

// ourMistake reports the refusals of a notification whose signature
// checked out: the APIv3 key cannot open it (EDECRYPT) or it names
// another merchant (EMERCHANT). WeChat Pay signed it, so the fault is
// most likely our configuration (a rotated key, a wrong mchid), and every
// genuine callback is being refused until someone acts: an error, not the
// info a forgery gets.
func ourMistake(code string) bool { return code == CodeDecrypt || code == CodeMerchant }

// errSignedRefusal is the cause of the other refusals of a notification
// WeChat Pay signed that it will send again for 24 hours, refused each
// time: one on the wrong endpoint (a refund notify_url pointing at the
// payment route), one whose amount or currency differs from the order's.
// Logged as errors too: nobody reads info lines for a day.
var errSignedRefusal = errors.New("a notification WeChat Pay signed is refused")

func logError(c *gin.Context, status int, err error) {
	c.Set(errorCodeKey, ErrorCode(err))
	if ErrorCode(err) == CodeRateLimited {
		c.Set(rateLimitedKey, true) // counted by the metrics
	}
	level := slog.LevelInfo
	if status >= 500 || ourMistake(ErrorCode(err)) || errors.Is(err, errSignedRefusal) {
		level = slog.LevelError
	}
	slog.Log(c.Request.Context(), level, "request failed", "path", c.FullPath(), "status", status,
		"code", ErrorCode(err), "err", truncateLog(err.Error(), maxLoggedError), "request_id", c.GetString(requestIDKey))
}
