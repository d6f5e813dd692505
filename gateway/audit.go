package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// keyed is the chain in front of an API-key route: the caller's key, the
// caller's rate limit (bucket), the back-office bulkhead when shed is set
// (Deps.backOffice), the audit entry, the role, then the query string
// (wellFormedQuery: the routes that read one are all keyed). A refusal for the
// role is audited (403): a key used past its role is what an auditor looks
// for. A 401, a 429 or a busy 503 is not: each would have the gateway
// write to the database a row per refused request, which is what the
// limits are there to prevent; they are counted in the metrics
// (gateway_http_requests_total, gateway_rate_limited_total).
func (d *Deps) keyed(bucket string, limit Limit, shed bool, roles ...Role) []gin.HandlerFunc {
	chain := []gin.HandlerFunc{d.Auth.Authenticate(), RateLimit(d.Limiter, PrincipalKey(bucket), limit)}
	if shed {
		chain = append(chain, d.backOffice())
	}
	// The query is checked last: a refusal of a known key's request for
	// its query is audited like any other.
	return append(chain, auditTrail(d.Store), RequireRole(roles...), wellFormedQuery())
}

// auditTrail records every request of an authenticated caller (who, what,
// when, outcome) in the audit log. The entry is written before the handler
// runs and a request whose entry cannot be written is refused (503), so
// nothing is served without a record; the status is added afterwards.
// It goes after Auth.Authenticate in the chain (see keyed).
func auditTrail(store *ledger.Store) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := CurrentPrincipal(c)
		path := c.Request.URL.RequestURI()
		ctx, cancel := context.WithTimeout(c.Request.Context(), CheckTimeout)
		id, err := store.BeginAudit(ctx, ledger.AuditEntry{Principal: p.Name, Role: string(p.Role),
			Method: c.Request.Method, Path: path, RequestID: c.GetString(requestIDKey),
			RemoteAddr: c.ClientIP()})
		cancel()
		if err != nil {
			writeError(c, Errorf(CodeUnavailable, "audit log unavailable", err))
			return
		}
		c.Set(auditIDKey, id)
		finished := false
		defer func() {
			status := c.Writer.Status()
			if !finished { // a panic: the recovery, further out, answers 500 after this
				status = http.StatusInternalServerError
			}
			// The request context may have ended (timeout, client gone):
			// the outcome is still recorded.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
			defer cancel()
			if err := store.FinishAudit(ctx, id, status); err != nil {
				slog.ErrorContext(ctx, "finish audit entry", "audit_id", id, "err", err)
			}
		}()
		if len(path) > ledger.MaxAuditPath {
			// Served, it would be recorded cut: padding ("?&&&…&filter=")
			// could push what a request read out of its entry.
			writeError(c, &Error{Code: CodeTooLarge,
				Message: fmt.Sprintf("request URI over %d bytes, more than the audit log keeps", ledger.MaxAuditPath)})
		} else {
			c.Next()
		}
		finished = true
	}
}

// auditIDKey holds the request's audit entry id (see auditTarget).
const auditIDKey = "audit_id"

// auditTarget writes in the request's audit entry what it acts on when
// its path does not say (a reconciliation's date comes in the body), at
// once: a run that never ends still names its day. Like the entry, it
// must be written for the request to go on (503 otherwise). A request
// without an entry (a route not audited) has nothing to note.
func auditTarget(c *gin.Context, store *ledger.Store, target string) error {
	id, ok := c.Get(auditIDKey)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), CheckTimeout)
	defer cancel()
	if err := store.NoteAuditTarget(ctx, id.(uint64), target); err != nil {
		return Errorf(CodeUnavailable, "audit log unavailable", err)
	}
	return nil
}
