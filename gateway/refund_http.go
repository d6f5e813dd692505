package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// RefundRoutes adds the mini-program's refund API, authenticated by user
// JWTs: POST /v1/refunds (Idempotency-Key required) and
// GET /v1/refunds/{out_refund_no}.
func RefundRoutes(svc *RefundService, auth *JWTAuth) func(r *gin.Engine, d *Deps) {
	return func(r *gin.Engine, d *Deps) {
		api := r.Group("/v1", timeout(d.APITimeout), auth.Require(d.Metrics),
			RateLimit(d.Limiter, ScopedKey("refunds", CurrentOpenID), d.Limits.Refunds), wellFormedQuery())
		api.POST("/refunds", func(c *gin.Context) { createRefund(c, d, svc) })
		api.GET("/refunds/:out_refund_no", func(c *gin.Context) { getRefund(c, svc) })
	}
}

// RefundNotifyRoute adds POST /v1/wechatpay/notify/refund.
func RefundNotifyRoute(r *gin.Engine, d *Deps) {
	r.Group("/v1/wechatpay/notify", timeout(d.NotifyTimeout)).POST("/refund", d.Metrics.Notification("refund"), d.refundNotify)
}

func createRefund(c *gin.Context, d *Deps, svc *RefundService) {
	key := c.GetHeader("Idempotency-Key")
	// One key only: with two, a proxy that keeps the last would see
	// another key than this handler, which reads the first.
	if !validIdempotencyKey(key) || len(c.Request.Header.Values("Idempotency-Key")) > 1 {
		writeError(c, &Error{Code: CodeInvalid, Message: "one Idempotency-Key header (1-128 printable ASCII characters) is required"})
		return
	}
	var p RefundParams
	if err := DecodeJSON(c, d.MaxBodyBytes, &p); err != nil {
		writeError(c, err)
		return
	}
	// The refund's WeChat Pay work (call_timeout) and the ledger writes
	// recording it (recordTimeout each: an unknown outcome, what the query
	// after it learnt, and the stored answer) run on after the API budget
	// and may outlast http.write_timeout: the answer must still reach the
	// client, or it may retry with a new key and refund twice.
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(d.APITimeout + svc.WorkBudget()))
	// Counted (see Drain) until the answer is out, not only until it is
	// stored: shutdown must not close the process before it is. Past its
	// key's claim a refund ignores the cut-off (see Create).
	defer svc.work.begin()()
	a, err := svc.Create(c.Request.Context(), CurrentOpenID(c), key, p)
	if err != nil {
		writeError(c, err)
		return
	}
	if a.Replayed {
		c.Header("Idempotent-Replayed", "true")
	}
	if a.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int(a.RetryAfter/time.Second)))
	}
	c.Data(a.Status, "application/json; charset=utf-8", a.Body)
	c.Writer.Flush()
}

func getRefund(c *gin.Context, svc *RefundService) {
	no := c.Param("out_refund_no")
	if !keyPattern.MatchString(no) {
		writeError(c, invalid("out_refund_no must be 1-64 of A-Z a-z 0-9 _ - | * @ . :"))
		return
	}
	r, err := svc.Get(c.Request.Context(), CurrentOpenID(c), no)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, userView(r))
}

// refundNotify answers 204 only after the ledger committed.
func (d *Deps) refundNotify(c *gin.Context) {
	body, err := ReadBody(c, d.MaxBodyBytes)
	if err == nil {
		err = d.Processor.HandleRefund(c.Request.Context(), c.Request.Header, body)
	}
	if err != nil {
		writeWechatFail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// JanitorConfig tunes RunJanitor.
type JanitorConfig struct {
	Interval time.Duration // between sweeps; default 30 s
	Batch    int           // refunds claimed per sweep; default 50
}

// RunJanitor settles refunds left CREATED, PROCESSING, UNKNOWN or ABNORMAL past
// their next check until ctx ends. Safe with several gateway instances:
// each refund is claimed by a conditional UPDATE.
func (s *RefundService) RunJanitor(ctx context.Context, cfg JanitorConfig) {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 50
	}
	s.sweepEvery.Store(int64(cfg.Interval))
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		s.Sweep(ctx, cfg.Batch)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep settles up to batch stuck refunds from WeChat Pay's answers, one
// claim at a time, prunes expired idempotency keys, and returns how many
// refunds it looked at. Each refund is claimed just before its check, so
// while WeChat Pay is slow the refunds this sweep has not reached stay
// free for other instances' janitors.
func (s *RefundService) Sweep(ctx context.Context, batch int) int {
	n, began := 0, s.store.Now()
	for ; n < batch && ctx.Err() == nil; n++ {
		qctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		claimed, err := s.store.ClaimStuckRefunds(qctx, began, 1, 2*s.cfg.CallTimeout)
		cancel()
		if err != nil {
			slog.ErrorContext(ctx, "janitor: claim refunds", "err", err)
		}
		if len(claimed) == 0 {
			break
		}
		r := &claimed[0]
		after := s.check(ctx, r)
		slog.InfoContext(ctx, "janitor: refund checked", "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo,
			"from", r.State, "to", after.State)
	}
	s.pruneKeys(ctx)
	return n
}

// check settles one claimed refund. It finishes, and is recorded, even
// when shutdown begins (Drain waits for it): the sweep stops between
// refunds. It is counted until it ends, a panic included (the janitor
// starts again), so Drain never waits for a check that is over.
func (s *RefundService) check(ctx context.Context, r *ledger.Refund) *ledger.Refund {
	defer s.work.begin()()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CallTimeout)
	defer cancel()
	return s.resolve(cctx, r, "janitor", true)
}

// pruneBatch is how many expired idempotency keys one DELETE removes.
const pruneBatch = 500

// pruneKeys deletes expired idempotency keys in batches until none is
// left or the call timeout has passed: one batch per sweep would fall
// behind a steady few dozen refunds a second.
func (s *RefundService) pruneKeys(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	for pctx.Err() == nil {
		n, err := s.store.PruneIdempotent(pctx, pruneBatch)
		if err != nil {
			slog.ErrorContext(ctx, "janitor: prune idempotency keys", "err", err)
			return
		}
		if n < pruneBatch {
			return
		}
	}
}

// validIdempotencyKey: 1-128 printable ASCII characters. Other bytes
// (not UTF-8) could not be stored, and the client would be told to retry
// a request that can never succeed.
func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}
