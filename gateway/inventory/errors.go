package inventory

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrUnknownOutcome means the inventory service may or may not have applied
// the operation: a timeout, a dropped connection, a 5xx, a 408, a 425, a 429, a 401/403/407,
// a 404/409 on a write (other than a key mismatch), a 404 on a query that is not the
// service's own NOT_FOUND, or an answer the client could not understand. Callers must query
// (ConfirmationDone, ReleaseDone) before deciding to send again; sending
// again with the same key is safe because the service deduplicates on it.
var ErrUnknownOutcome = errors.New("inventory: outcome unknown")

// ErrIdempotencyMismatch is joined with a PermanentError when the service
// already holds the key with a different body (409 IDEMPOTENCY_MISMATCH).
// A job resends only its own stored body, so this is a key collision (two
// callers sharing the service): the operation was not applied, and a later
// query for the key would find the other caller's record and call it done.
// The job is dead-lettered for an operator instead.
var ErrIdempotencyMismatch = errors.New("inventory: idempotency key reused with a different body")

// maxErrorBody caps the response body kept in a PermanentError.
const maxErrorBody = 1 << 10

// PermanentError is a rejection that sending again cannot fix: a 4xx other
// than 401, 403, 407, 404, 408, 409, 425 and 429, or a request the client refused to send
// (Status 0). The operation was not applied; dead-letter it.
type PermanentError struct {
	Status int    // HTTP status, or 0 when the client rejected the request
	Code   string // the service's error code, if it sent one
	Body   string // the first KiB of the response body, for diagnosis
}

// Error describes the rejection without the body, which may hold order data.
func (e *PermanentError) Error() string {
	return fmt.Sprintf("inventory: permanent failure: status %d, code %q", e.Status, e.Code)
}

// IsPermanent reports whether err says the operation was rejected for good.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}

// IsUnknown reports whether err leaves the outcome of the operation unknown.
func IsUnknown(err error) bool {
	return errors.Is(err, ErrUnknownOutcome)
}

// statusError classifies a non-2xx answer. 404 and 409 count as unknown on
// purpose: a 404 on a write usually means a proxy or deploy, not a verdict,
// and a 409 means the key already exists, so a query will say "done".
func statusError(status int, code string, body []byte) error {
	switch {
	case status == http.StatusConflict && code == "IDEMPOTENCY_MISMATCH":
		return errors.Join(&PermanentError{Status: status, Code: code, Body: truncate(body, maxErrorBody)}, ErrIdempotencyMismatch)
	case isUnknownStatus(status):
		return fmt.Errorf("%w: status %d, code %q", ErrUnknownOutcome, status, code)
	default:
		return &PermanentError{Status: status, Code: code, Body: truncate(body, maxErrorBody)}
	}
}

// isUnknownStatus reports whether an answer with this status leaves the
// outcome open. Anything that is not a 4xx (5xx, stray 1xx/3xx) is unknown,
// and so are 401, 403 and 407: credentials being rotated, a WAF or a proxy
// in a bad minute say nothing about the operation, and as permanent errors
// they would dead-letter every confirmation sent meanwhile (holding each
// order's releases behind it) until someone replayed them one by one.
// 425 Too Early is a front end refusing a request sent in TLS early data
// until the handshake is done: it asks for the same request again. They
// still end in DEAD after outbox.max_elapsed.
func isUnknownStatus(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired,
		http.StatusNotFound, http.StatusRequestTimeout,
		http.StatusConflict, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return status < 400 || status >= 500
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// invalidRequest is returned before sending anything when a field is missing.
func invalidRequest(msg string) error {
	return &PermanentError{Code: "INVALID_REQUEST", Body: msg}
}
