package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// Deps are what the HTTP edge needs.
type Deps struct {
	readiness     *readiness // made by NewRouter
	Processor     *Processor
	Store         *ledger.Store
	Auth          *Auth
	MaxBodyBytes  int64         // request body cap; default 64 KiB
	NotifyTimeout time.Duration // WeChat wants an answer within 5 s; default 4 s
	APITimeout    time.Duration // other routes; default 10 s
	Metrics       *Metrics      // nil: no metrics
	// MetricsElsewhere keeps /metrics off this router: it is served on an
	// internal listener, away from the port WeChat Pay and users reach.
	MetricsElsewhere bool
	Limiter          Limiter // nil: no rate limiting
	// TrustedProxies may set X-Forwarded-For (see CheckProxies); none
	// by default, so a caller cannot choose the address it is logged with.
	TrustedProxies []string
	// MaxBackOffice caps the finance and ops requests served at once
	// (default 16; see backOffice).
	MaxBackOffice   int
	backOfficeSlots slots
	Limits          RateLimits // per-caller limits of the limited routes
	// Routes lets other features add their routes to the same engine.
	Routes []func(r *gin.Engine, d *Deps)
	// Draining, when set and true, makes /readyz answer 503: the instance
	// is shutting down and should get no new traffic.
	Draining *atomic.Bool
}

// NewRouter builds the gin engine with every route.
func NewRouter(d Deps) *gin.Engine {
	d = withDefaults(d)
	r := gin.New()
	// No redirects to the path with or without a trailing slash: gin sends
	// them before any middleware (no JSON code, request id, log or metric).
	r.RedirectTrailingSlash = false
	if err := r.SetTrustedProxies(d.TrustedProxies); err != nil {
		slog.Error("http.trusted_proxies refused; trusting none", "err", err)
		_ = r.SetTrustedProxies(nil)
	}
	// Only the header proxies append to: X-Real-IP is often passed through
	// from the client untouched.
	r.RemoteIPHeaders = []string{"X-Forwarded-For"}
	if len(d.TrustedProxies) > 0 {
		r.Use(forwardedWithoutPorts())
	}
	r.Use(closeAfterRiskyFraming(), requestID(), requestContext(), AccessLog(), d.Metrics.Middleware(), recovery(), notifyListenerOnly())
	r.NoRoute(func(c *gin.Context) { writeError(c, &Error{Code: CodeNotFound, Message: "no such route"}) })
	// Probes answer HEAD too: some load balancers check health with it.
	healthy := func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) }
	r.GET("/healthz", healthy)
	r.HEAD("/healthz", healthy)
	d.readiness = &readiness{}
	r.GET("/readyz", d.ready)
	r.HEAD("/readyz", d.ready)
	if d.Metrics != nil && !d.MetricsElsewhere {
		r.GET("/metrics", append(d.metricsGuard(), gin.WrapH(d.Metrics.Handler()))...)
	}
	notify := r.Group("/v1/wechatpay/notify", timeout(d.NotifyTimeout))
	notify.POST("/payment", d.Metrics.Notification("payment"), d.paymentNotify)
	api := r.Group("/v1", timeout(d.APITimeout))
	api.POST("/orders", append(d.keyed("orders", d.Limits.Orders, false, RoleService), d.registerOrder)...)
	api.GET("/ledger/payments/:out_trade_no", append(d.keyed("ledger", d.Limits.Ledger, true, RoleFinance, RoleOps), d.getPayment)...)
	for _, add := range d.Routes {
		add(r, &d)
	}
	return r
}

// CheckProxies checks trusted proxy entries (IP addresses or CIDRs) with
// the parser NewRouter hands them to, so the two cannot disagree (on a
// bare Engine: gin.New would print gin's debug banner outside the JSON
// log, before Run sets release mode). A range wider than a load balancer
// network is refused: trusting 0.0.0.0/0 lets every client choose its
// X-Forwarded-For, and so its address for the failed-key lockout and the
// audit.
func CheckProxies(proxies []string) error {
	if err := new(gin.Engine).SetTrustedProxies(proxies); err != nil {
		return err
	}
	for _, p := range proxies {
		if err := checkProxyWidth(p); err != nil {
			return err
		}
	}
	return nil
}

// checkProxyWidth refuses an IPv4 range wider than /8 and an IPv6 one
// wider than /32 (/8 within the unique local fc00::/7, which the internet
// cannot reach); an IPv4-mapped IPv6 range counts as IPv4.
func checkProxyWidth(proxy string) error {
	if !strings.Contains(proxy, "/") {
		return nil // one address
	}
	p, err := netip.ParsePrefix(proxy)
	if err != nil {
		return err
	}
	bits, least := p.Bits(), 32
	switch {
	case p.Addr().Is4():
		least = 8
	case p.Addr().Is4In6():
		bits, least = bits-96, 8
	case uniqueLocal.Contains(p.Addr()):
		least = 8
	}
	if bits < least {
		return fmt.Errorf("%s trusts too wide a range (at most /%d): name the load balancers' network", proxy, least)
	}
	return nil
}

var uniqueLocal = netip.MustParsePrefix("fc00::/7")

func withDefaults(d Deps) Deps {
	if d.MaxBodyBytes <= 0 {
		d.MaxBodyBytes = 64 << 10
	}
	if d.NotifyTimeout <= 0 {
		d.NotifyTimeout = 4 * time.Second
	}
	if d.APITimeout <= 0 {
		d.APITimeout = 10 * time.Second
	}
	if d.MaxBackOffice <= 0 {
		d.MaxBackOffice = 16
	}
	d.backOfficeSlots = newSlots(d.MaxBackOffice)
	return d
}

// ReadBody reads at most max bytes of the request body.
func ReadBody(c *gin.Context, max int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, max))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, &Error{Code: CodeTooLarge, Message: "request body too large"}
	}
	if err != nil {
		return nil, Errorf(CodeInvalid, "could not read body", err)
	}
	return body, nil
}

// paymentNotify answers 204 only after the ledger committed.
func (d *Deps) paymentNotify(c *gin.Context) {
	body, err := ReadBody(c, d.MaxBodyBytes)
	if err == nil {
		err = d.Processor.HandlePayment(c.Request.Context(), c.Request.Header, body)
	}
	if err != nil {
		writeWechatFail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (d *Deps) ready(c *gin.Context) {
	if d.Draining != nil && d.Draining.Load() {
		writeError(c, &Error{Code: CodeUnavailable, Message: "shutting down"})
		return
	}
	if err := d.readiness.check(c.Request.Context(), d.Store.Ping); err != nil {
		writeError(c, Errorf(CodeUnavailable, "database not ready", err))
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}

// readiness shares one database ping among the /readyz requests of a
// second: the probe is unauthenticated, and a flood of it must not take
// the pool from notifications.
type readiness struct {
	mu     sync.Mutex
	at     time.Time
	result error
}

// check pings (bounded by 2 s) unless a ping in the last second answers.
func (r *readiness) check(ctx context.Context, ping func(context.Context) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && time.Since(r.at) < time.Second {
		return r.result
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second) // shared: not one caller's
	defer cancel()
	r.result, r.at = ping(pctx), time.Now()
	return r.result
}

const requestIDKey = "gateway.request_id"

// closeAfterRiskyFraming closes the connection after answering a request
// whose body came in chunks. RFC 9112 §6.1 says a server MUST do so when the
// request carried a Content-Length too: a proxy in front that framed it by
// the Content-Length took the bytes after the last chunk for body, and read
// here as a request of their own they would be one the proxy never sent
// (request smuggling), answered on its connection in place of the next
// client's. net/http frames by the chunks and deletes the Content-Length
// before any handler runs, so every chunked request closes its connection:
// costing a client that sends them a new connection, nothing more (WeChat
// Pay's notifications and the usual API clients send a Content-Length).
// The same holds for any HTTP/1.0 request (§6.1 again: one with a
// Transfer-Encoding has faulty framing). net/http frames it by its
// Content-Length, or as bodiless without one, and deletes the
// Transfer-Encoding unseen, while a proxy may have framed it by the chunks;
// as the header cannot be seen here, every HTTP/1.0 connection is closed
// after its answer (keep-alive on HTTP/1.0 is a rarity).
func closeAfterRiskyFraming() gin.HandlerFunc {
	return func(c *gin.Context) {
		r := c.Request
		if len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1) {
			c.Header("Connection", "close")
		}
		c.Next()
	}
}

// metricsGuard: on the Internet-facing port only a metrics or ops key may
// read /metrics (refund counts, anomalies, traffic by route); an own
// listener (http.metrics_addr) needs no key. Prometheus sends the key as
// "Authorization: Bearer <key>" (its scrape config's authorization), or
// X-Api-Key. Scrapes are not audited or rate limited. A router without
// key auth (some unit tests) serves them openly; the gateway always has it.
func (d *Deps) metricsGuard() []gin.HandlerFunc {
	if d.Auth == nil {
		return nil
	}
	bearer := func(c *gin.Context) {
		h := c.GetHeader("Authorization")
		if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") && c.GetHeader("X-Api-Key") == "" {
			c.Request.Header.Set("X-Api-Key", strings.TrimSpace(h[7:]))
		}
	}
	return []gin.HandlerFunc{bearer, d.Auth.Authenticate(), RequireRole(RoleMetrics, RoleOps)}
}

// requestID takes X-Request-Id from the caller (1-64 of A-Z a-z 0-9 . _ :
// -, so it is safe in logs, headers and the audit log) or makes one, and
// returns it.
func requestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader("X-Request-Id")
		if !validRequestID(id) {
			id = NewToken()
		}
		c.Set(requestIDKey, id)
		c.Header("X-Request-Id", id)
		c.Next()
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:-", r)
		if !ok {
			return false
		}
	}
	return true
}

// recovery turns a panic into a logged 500 JSON answer. A panic after
// the answer began (part of a CSV export written) cannot change its
// status: the connection is cut instead (http.ErrAbortHandler), so the
// client sees a broken answer, not a 200 that looks whole.
func recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			c.Set(errorCodeKey, CodeInternal)
			slog.ErrorContext(c.Request.Context(), "panic", "panic", v, "path", c.FullPath(),
				"request_id", c.GetString(requestIDKey), "stack", string(debug.Stack()))
			if c.Writer.Written() {
				panic(http.ErrAbortHandler)
			}
			// The headers the handler set were for the answer it did not
			// send (an export's text/csv attachment): the 500 is JSON.
			for k := range c.Writer.Header() {
				if k != "X-Request-Id" && k != "Connection" { // see closeAfterRiskyFraming
					c.Writer.Header().Del(k)
				}
			}
			body := gin.H{"code": CodeInternal, "message": "internal error"}
			if strings.HasPrefix(c.FullPath(), notifyPrefix) { // WeChat Pay's failure answer, as writeWechatFail's
				body = gin.H{"code": "FAIL", "message": "internal error", "reason": CodeInternal}
			}
			c.AbortWithStatusJSON(http.StatusInternalServerError, body)
		}()
		c.Next()
	}
}

// wellFormedQuery refuses a query string Go would read only in part (a
// bad escape or a ";" drops the pair silently, so a list would answer
// without its filter) or whose text is not UTF-8.
func wellFormedQuery() gin.HandlerFunc {
	return func(c *gin.Context) {
		raw := c.Request.URL.RawQuery
		if raw == "" {
			return
		}
		q, err := url.ParseQuery(raw)
		for k, vs := range q {
			if !utf8.ValidString(k) || !utf8.ValidString(strings.Join(vs, "")) {
				err = errors.New("not UTF-8")
			}
		}
		if err != nil {
			writeError(c, &Error{Code: CodeInvalid, Message: "malformed query string", Err: err})
		}
	}
}

// timeoutUnlessLong is timeout(d) for every request but an export or a
// reconciliation run (see long), which set their own, longer bounds. First
// in a group, it bounds the key check and the audit entry too: on a slow
// database such a request ends within d, not after them and then d (and
// within http.write_timeout, past which its answer would be cut off
// although the server logged it).
func timeoutUnlessLong(d time.Duration) gin.HandlerFunc {
	bounded := timeout(d)
	return func(c *gin.Context) {
		if long(c) {
			c.Next()
			return
		}
		bounded(c)
	}
}

// long reports a finance request that may run past the API timeout: a CSV
// export, or a reconciliation run by hand.
func long(c *gin.Context) bool {
	return wantsCSV(c) || c.Query("format") == "csv" ||
		c.Request.Method == http.MethodPost && c.FullPath() == "/v1/reconciliations"
}

// timeout bounds the request context of a route group.
func timeout(d time.Duration) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), d)
		defer cancel()
		c.Request = c.Request.WithContext(ctx)
		c.Next()
	}
}
