package gateway

import (
	"context"
	"log/slog"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// auditTrail records every request of an authenticated caller (who, what,
// when, outcome) in the audit log. The entry is written before the handler
// runs and a request whose entry cannot be written is refused (503), so
// nothing is served without a record; the status is added afterwards.
// It goes after Auth.Require in the chain.
func auditTrail(store *ledger.Store) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := CurrentPrincipal(c)
		ctx, cancel := context.WithTimeout(c.Request.Context(), CheckTimeout)
		id, err := store.BeginAudit(ctx, ledger.AuditEntry{Principal: p.Name, Role: string(p.Role),
			Method: c.Request.Method, Path: c.Request.URL.RequestURI(), RequestID: c.GetString(requestIDKey),
			RemoteAddr: c.ClientIP()})
		cancel()
		if err != nil {
			writeError(c, Errorf(CodeUnavailable, "audit log unavailable", err))
			return
		}
		defer func() {
			// The request context may have ended (timeout, client gone):
			// the outcome is still recorded.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
			defer cancel()
			if err := store.FinishAudit(ctx, id, c.Writer.Status()); err != nil {
				slog.ErrorContext(ctx, "finish audit entry", "audit_id", id, "err", err)
			}
		}()
		c.Next()
	}
}
