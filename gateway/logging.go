package gateway

import (
	"context"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// errorCodeKey holds the code of the error a handler answered with, for
// the access log and the notification metrics.
const errorCodeKey = "gateway.error_code"

type requestIDCtxKey struct{}

// WithRequestID returns ctx carrying the request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDCtxKey{}, id)
}

// RequestID returns the request id carried by ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDCtxKey{}).(string)
	return id
}

// requestContext puts the request id (set by requestID) into the request
// context, so any slog.*Context call in a handler carries it (see
// NewLogHandler), and the account of its waits for Redis (see
// FallbackLimiter.Budget).
func requestContext() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := WithRedisWait(WithRequestID(c.Request.Context(), c.GetString(requestIDKey)))
		c.Request = c.Request.WithContext(ctx)
		c.Next()
	}
}

// AccessLog logs one line per request: route, status, duration, request
// id, the error code if any, the caller's key name, and for a key refused
// (unknown, or its address locked out) the address it came from. It logs
// the path without the query and never headers or bodies (they carry
// keys, signatures and ciphertext).
func AccessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start, finished := time.Now(), false
		defer func() { logRequest(c, start, finished) }() // an aborted request is logged too
		c.Next()
		finished = true
	}
}

// logRequest writes the access line of a request; finished is false when
// it was cut off by a panic (e.g. an export aborted midway).
func logRequest(c *gin.Context, start time.Time, finished bool) {
	status := c.Writer.Status()
	level := slog.LevelInfo
	if status >= 500 || !finished {
		level = slog.LevelWarn
	}
	attrs := []any{"method", methodLabel(c.Request.Method), "route", c.FullPath(), "path", truncateLog(c.Request.URL.Path, 128),
		"status", status, "duration_ms", float64(time.Since(start).Microseconds()) / 1000,
		"bytes", c.Writer.Size()}
	if !finished {
		attrs = append(attrs, "aborted", true)
	}
	if code := c.GetString(errorCodeKey); code != "" {
		attrs = append(attrs, "code", code)
	}
	if p := CurrentPrincipal(c); p.Name != "" {
		attrs = append(attrs, "caller", p.Name)
	}
	if addr := c.GetString(refusedKeyAddrKey); addr != "" {
		attrs = append(attrs, "addr", addr)
	}
	slog.Log(c.Request.Context(), level, "http request", attrs...)
}

// truncateLog cuts s to n bytes on a character boundary, marking the cut.
func truncateLog(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// NewLogHandler wraps h so every record logged with a context that
// carries a request id gets a request_id attribute.
func NewLogHandler(h slog.Handler) slog.Handler { return ctxHandler{h} }

type ctxHandler struct{ slog.Handler }

// Handle implements slog.Handler.
func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" && !hasAttr(r, "request_id") {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

// WithAttrs implements slog.Handler.
func (h ctxHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return ctxHandler{h.Handler.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h ctxHandler) WithGroup(name string) slog.Handler { return ctxHandler{h.Handler.WithGroup(name)} }
