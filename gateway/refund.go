package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"paygateway/ledger"
)

// RefundConfig tunes the refund service; zero values get safe defaults.
type RefundConfig struct {
	// InFlight is how long a request holds its idempotency key before
	// another may take it over (the holder is presumed dead); default 30 s.
	InFlight time.Duration
	// KeyTTL is how long a key that made no refund is kept; at least
	// 24 h. A key that made a refund is kept as long as the refund.
	KeyTTL time.Duration
	// SafetyBuffer is how long a CREATED or UNKNOWN refund is left to the
	// request handling it before the janitor queries it; default 2 min.
	SafetyBuffer time.Duration
	// Recheck is how often the janitor queries a PROCESSING or ABNORMAL
	// refund; default 10 min.
	Recheck time.Duration
	// CallTimeout bounds the WeChat Pay work of one request (create, query)
	// or janitor check (query, one resend); default 15 s. The ledger writes
	// recording it have their own bound (recordTimeout).
	CallTimeout time.Duration
	// APITimeout is the request's budget before its WeChat Pay work
	// (http.api_timeout): the idempotency key's hold starts before it.
	APITimeout time.Duration
	LockTTL    time.Duration // Redis lock on the order; default 10 s
	LockWait   time.Duration // wait for the lock holder; default 1 s
	// Calls limits new refund applications of all users together, below
	// WeChat Pay's per-merchant rate (above it WeChat answers 429
	// FREQUENCY_LIMITED and every refund over it turns UNKNOWN until a
	// query settles it). Replays, in-flight and invalid requests never
	// reach WeChat Pay, so they spend none of it. Nil Limiter: no limit.
	Calls     Limiter
	CallLimit Limit
	// OrderGap spaces the refund applications of one order: WeChat Pay
	// answers FREQUENCY_LIMITED to one sent within a minute of the last
	// (申请退款: 同一笔订单多次退款的请求需相隔1分钟). A refund asked for
	// sooner is recorded, its amount reserved, answered 202 and sent by the
	// janitor once the gap ends. The gap runs from when the gateway sent
	// the last one, which may reach WeChat Pay up to CallTimeout later:
	// default a minute plus CallTimeout plus 5 s for the clocks (80 s).
	OrderGap time.Duration
}

func (c RefundConfig) withDefaults() RefundConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.InFlight, 30*time.Second)
	def(&c.KeyTTL, 24*time.Hour)
	if c.KeyTTL < 24*time.Hour {
		c.KeyTTL = 24 * time.Hour
	}
	def(&c.SafetyBuffer, 2*time.Minute)
	def(&c.Recheck, 10*time.Minute)
	def(&c.CallTimeout, 15*time.Second)
	def(&c.LockTTL, 10*time.Second)
	def(&c.LockWait, time.Second)
	def(&c.OrderGap, time.Minute+c.CallTimeout+orderGapSkew)
	return c
}

// Check refuses timings under which a request's work could outlive its
// hold: a retry taking over its Idempotency-Key, or the janitor claiming
// its refund, while the request is still calling WeChat Pay. The ledger
// writes recording the calls have a bound of their own (recordTimeout) and
// normally take milliseconds; keep safety_buffer well above call_timeout
// (the defaults: 2 min and 15 s), as a takeover only queries but the
// janitor may send again.
func (c RefundConfig) Check() error {
	if c.OrderGap < 0 {
		return fmt.Errorf("order_gap (%v) must not be negative (0: the default)", c.OrderGap)
	}
	c = c.withDefaults()
	switch {
	case c.InFlight <= c.APITimeout+c.CallTimeout:
		return fmt.Errorf("in_flight (%v) must be longer than call_timeout (%v) plus http.api_timeout (%v)",
			c.InFlight, c.CallTimeout, c.APITimeout)
	case c.SafetyBuffer <= c.CallTimeout:
		return fmt.Errorf("safety_buffer (%v) must be longer than call_timeout (%v)", c.SafetyBuffer, c.CallTimeout)
	}
	return nil
}

// orderGapSkew is the room the default OrderGap keeps for the gateway's
// clocks (several instances) against WeChat's.
const orderGapSkew = 5 * time.Second

// querySettles is how long WeChat Pay's refund queries may lag its
// applications (it advises querying a minute after applying).
const querySettles = time.Minute

// Warnings names timings Check accepts that are unsafe against WeChat Pay
// itself, though fine against a simulator whose queries lag less (or not
// at all): with safety_buffer under call_timeout plus querySettles, the
// janitor may ask
// about a refund before WeChat Pay shows it, send it again and, should
// WeChat Pay refuse the repeat, fail a refund that was made.
//
// With order_gap under a minute plus call_timeout, a second refund of an
// order may reach WeChat Pay within a minute of the first (which may have
// taken up to call_timeout to get there) and meet its FREQUENCY_LIMITED:
// an unknown outcome, settled by the janitor a safety buffer later
// (money-safe, but slow and noisy).
func (c RefundConfig) Warnings() []string {
	c = c.withDefaults()
	var out []string
	if floor := c.CallTimeout + querySettles; c.SafetyBuffer < floor {
		out = append(out, fmt.Sprintf("safety_buffer (%v) is under call_timeout (%v) plus the minute WeChat Pay's refund queries may lag; "+
			"safe only against a simulator whose queries lag less", c.SafetyBuffer, c.CallTimeout))
	}
	if floor := time.Minute + c.CallTimeout; c.OrderGap < floor {
		out = append(out, fmt.Sprintf("order_gap (%v) is under the minute WeChat Pay wants between two refunds of an order plus "+
			"call_timeout (%v), how long the last may take to reach it; safe only against a simulator with a shorter gap", c.OrderGap, c.CallTimeout))
	}
	return out
}

// RefundService carries refunds out against WeChat Pay: the ledger decides
// (money rule, state machine, idempotency keys), WeChat Pay executes.
type RefundService struct {
	cfg    RefundConfig
	store  *ledger.Store
	api    RefundAPI
	locker Locker
	work   inProgress // refund requests under way, janitor checks: see Drain
	// sweepEvery is the running janitor's interval (0 before RunJanitor):
	// a refund waiting for its order's gap goes out at the first sweep
	// after its slot, which a waiting answer's Retry-After allows for.
	sweepEvery atomic.Int64
}

// inProgress counts work that runs to its end on budgets of its own, past
// its caller's cancellation.
type inProgress struct{ n atomic.Int64 }

func (p *inProgress) begin() (end func()) {
	p.n.Add(1)
	return func() { p.n.Add(-1) }
}

// WorkBudget bounds a refund's work once its key is claimed, or one
// janitor check: the WeChat Pay calls (call_timeout) and the ledger writes
// recording them (an unknown outcome, what the query after it learnt, and
// the stored answer).
func (s *RefundService) WorkBudget() time.Duration { return s.cfg.CallTimeout + 3*recordTimeout }

// Drain waits, up to WorkBudget, for the refund requests and the janitor
// check under way to end, recorded and answered, and reports whether they
// did. Shutdown calls it once requests and jobs have stopped, before
// the database closes: a refund WeChat Pay took while its answer could no
// longer be stored would leave its client without one, and the client
// might then refund again under a new key.
func (s *RefundService) Drain() bool {
	deadline := time.Now().Add(s.WorkBudget())
	for s.work.n.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// NewRefundService wires the service.
func NewRefundService(cfg RefundConfig, store *ledger.Store, api RefundAPI, locker Locker) *RefundService {
	return &RefundService{cfg: cfg.withDefaults(), store: store, api: api, locker: locker}
}

// RefundParams are the parameters of POST /v1/refunds.
type RefundParams struct {
	OutTradeNo string `json:"out_trade_no"`
	Amount     int64  `json:"amount"`
	Reason     string `json:"reason"`
}

func (p RefundParams) validate() error {
	switch {
	case !ValidOutTradeNo(p.OutTradeNo):
		return &Error{Code: CodeInvalid, Message: "out_trade_no must be 6-32 of A-Z a-z 0-9 _ - | *"}
	case p.Amount <= 0 || p.Amount > MaxAmount:
		return &Error{Code: CodeInvalid, Message: "amount must be a positive number of fen"}
	case len(p.Reason) > 80: // WeChat Pay counts bytes: 26 Chinese characters fit, 27 do not
		return &Error{Code: CodeInvalid, Message: "reason is at most 80 bytes of UTF-8"}
	case strings.IndexFunc(p.Reason, unsafeInReason) >= 0: // shown to the payer in WeChat's refund message
		return &Error{Code: CodeInvalid, Message: "reason must not hold control characters (line breaks, tabs, NUL, " +
			"U+2028/U+2029, bidirectional controls)"}
	}
	return nil
}

// unsafeInReason reports a character a reason may not hold: a control
// character, a line or paragraph separator (a line break to the payer's
// WeChat and to finance's CSV), or a bidirectional control, which makes
// the text shown (to the payer, in finance's export) read otherwise than
// the text stored: after U+202E, "001" reads "100".
func unsafeInReason(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp, unicode.Bidi_Control)
}

// hash is the SHA-256 of the canonical parameters (fixed field order).
func (p RefundParams) hash() string {
	b, _ := json.Marshal(p) // cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Answer is an HTTP answer to store and replay byte for byte.
type Answer struct {
	Status   int
	Body     []byte
	Replayed bool
	// RetryAfter, when set, is when asking again may learn more: for a
	// refund waiting for its order's gap, the end of the gap and one
	// janitor sweep.
	RetryAfter time.Duration
}

// Create runs POST /v1/refunds for the caller openid under idemKey. Errors
// (nothing recorded): EIN_FLIGHT, EIDEMPOTENCY_MISMATCH, ENOTFOUND (also
// for someone else's order), ECONFLICT, EUNAVAILABLE. Once a refund exists the answer is
// stored and replayed for the key.
func (s *RefundService) Create(ctx context.Context, openid, idemKey string, p RefundParams) (*Answer, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	k, run, err := s.store.BeginIdempotent(ctx, openid, idemKey, p.hash(), s.cfg.InFlight, s.cfg.KeyTTL)
	switch {
	case errors.Is(err, ledger.ErrInFlight):
		return nil, inFlight(Errorf(CodeInFlight, "a request with this Idempotency-Key is in progress; retry later", err))
	case errors.Is(err, ledger.ErrIdempotencyMismatch):
		return nil, Errorf(CodeKeyReused, "Idempotency-Key was used with other parameters", err)
	case err != nil:
		return nil, ledgerError(err)
	case !run:
		return s.replay(ctx, k)
	}
	// From here the work finishes even if the client goes away (shutdown
	// waits for it: see createRefund and Drain).
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CallTimeout)
	defer cancel()
	var r *ledger.Refund
	var ans *ledger.IdemAnswer
	if k.ResourceKey != "" { // took over a crashed request: settle its refund if WeChat Pay knows it
		if r, err = s.store.Refund(wctx, k.ResourceKey); err == nil {
			r = s.resolve(wctx, r, ledger.SourceAPI, false)
		}
	} else if r, ans, err = s.first(ctx, wctx, k, p); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, ledgerError(err)
	}
	if ans != nil && ans.Stored {
		return &Answer{Status: ans.Status, Body: ans.Body}, nil
	}
	a := s.answer(r)
	fctx, fcancel := recordContext(ctx)
	defer fcancel()
	if err := s.store.FinishIdempotent(fctx, openid, idemKey, p.hash(), a.Status, a.Body); err != nil {
		slog.ErrorContext(ctx, "store idempotent answer", "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo, "err", err)
	}
	return a, nil
}

// first records a new refund and makes its first attempt at WeChat Pay.
// A refusal before anything is recorded releases the key. When WeChat Pay
// answers at once, the answer returned (ans.Stored) was stored under the
// key in the transaction that recorded WeChat's answer.
func (s *RefundService) first(ctx, wctx context.Context, k *ledger.IdemKey, p RefundParams) (*ledger.Refund, *ledger.IdemAnswer, error) {
	openid, idemKey := k.Scope, k.Key
	// A request the ledger would refuse spends none of WeChat's quota, nor
	// does one that will wait for its order's gap (the janitor's send of
	// it will).
	waits, err := s.store.CheckRefund(wctx, p.OutTradeNo, openid, p.Amount, s.cfg.OrderGap)
	err = refundError(err)
	if err == nil && !waits {
		err = s.admitCall(wctx)
	}
	var r *ledger.Refund
	if err == nil {
		r, err = s.record(wctx, openid, idemKey, p)
	}
	if err != nil {
		// On a budget of its own: the failure may be wctx running out.
		rctx, rcancel := recordContext(ctx)
		defer rcancel()
		if rerr := s.store.ReleaseIdempotent(rctx, openid, idemKey, p.hash(), k.LockedUntil); rerr != nil {
			slog.ErrorContext(ctx, "release idempotency key", "out_trade_no", p.OutTradeNo, "err", rerr)
		}
		return nil, nil, err
	}
	ans := &ledger.IdemAnswer{Scope: openid, Key: idemKey, Hash: p.hash(), Render: renderAnswer}
	if r.Unsent() {
		slog.InfoContext(ctx, "refund waits for the gap after its order's last application", "out_trade_no", r.OutTradeNo,
			"out_refund_no", r.OutRefundNo, "send_at", r.NextCheckAt)
		return r, ans, nil
	}
	return s.send(wctx, r, true, ans), ans, nil
}

// replay answers a finished key with its stored answer, except two that
// can go stale: a refusal (422) of a refund WeChat Pay later paid after
// all (FAILED → SUCCESS), so that the client is not told to ask for the
// money again; and "being established" (202), which the client sends
// again precisely to learn the outcome. Those are answered with the
// refund's current state. When a refused refund cannot be read the answer
// is "unavailable", never the stored refusal, which may be stale.
func (s *RefundService) replay(ctx context.Context, k *ledger.IdemKey) (*Answer, error) {
	a := &Answer{Status: k.StatusCode, Body: k.ResponseBody, Replayed: true}
	refusal := k.StatusCode == http.StatusUnprocessableEntity
	if (!refusal && k.StatusCode != http.StatusAccepted) || k.ResourceKey == "" {
		return a, nil
	}
	r, err := s.store.Refund(ctx, k.ResourceKey)
	switch {
	case err != nil && !refusal:
		return a, nil // "still being established" misleads nobody
	case err != nil:
		return nil, Errorf(CodeUnavailable, "the refund of this Idempotency-Key cannot be read now; retry with the same key", err)
	case refusal && r.State == ledger.RefundFailed:
		return a, nil
	}
	now := s.answer(r)
	now.Replayed = true
	return now, nil
}

// admitCall spends one of the merchant's refund applications; over the
// limit it answers ERATE_LIMITED with the wait. If the limiter fails the
// application goes through: the limit protects WeChat's quota, it must
// not stop refunds. The limit is Global: while Redis fails, each instance
// allows only its share of it.
func (s *RefundService) admitCall(ctx context.Context) error {
	if s.cfg.Calls == nil || s.cfg.CallLimit.PerMinute <= 0 {
		return nil
	}
	limit := s.cfg.CallLimit
	limit.Global = true
	d, err := s.cfg.Calls.Allow(ctx, "rl:refund-calls:all", limit)
	switch {
	case err != nil:
		slog.WarnContext(ctx, "refund call limiter unavailable, letting the refund through", "err", err)
		return nil
	case !d.Allowed:
		return rateLimited(d.RetryAfter)
	}
	return nil
}

// record writes the refund in the ledger (CREATED), behind an advisory
// lock on the order that only saves contention: the row lock decides.
func (s *RefundService) record(ctx context.Context, openid, idemKey string, p RefundParams) (*ledger.Refund, error) {
	unlock := lockWith(ctx, s.locker, "refund:"+p.OutTradeNo, s.cfg.LockTTL, s.cfg.LockWait)
	defer unlock()
	r, err := s.store.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: p.OutTradeNo, OutRefundNo: NewOutRefundNo(),
		Amount: p.Amount, Reason: p.Reason, Requester: openid, CheckAt: s.store.Now().Add(s.cfg.SafetyBuffer),
		IdemScope: openid, IdemKey: idemKey, IdemHash: p.hash(), Gap: s.cfg.OrderGap})
	if err != nil {
		return nil, refundError(err)
	}
	return r, nil
}

// refundError maps the ledger's refusal of a refund to the API's error.
func refundError(err error) error {
	var exceeds *ledger.RefundExceedsError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ledger.ErrNotFound), errors.Is(err, ledger.ErrNotOwner):
		// One answer for both: a user must not learn which order numbers
		// exist by asking to refund other people's orders.
		return Errorf(CodeNotFound, "you paid no order with this out_trade_no", err)
	case errors.Is(err, ledger.ErrNotRefundable):
		return Errorf(CodeConflict, "order is not paid", err)
	case errors.As(err, &exceeds):
		return Errorf(CodeConflict, fmt.Sprintf("refund exceeds what is left to refund (%d fen)", max(exceeds.Remaining, 0)), err)
	case errors.Is(err, ledger.ErrConflict): // a request that took the key over created the refund first
		return inFlight(Errorf(CodeInFlight, "another request with this Idempotency-Key holds it or created the refund; retry with the same key and parameters for its answer", err))
	case errors.Is(err, ledger.ErrAlreadyRecorded): // an out_refund_no collision: never answer with another's refund
		return Errorf(CodeUnavailable, "refund number already taken, try again", err)
	}
	return ledgerError(err)
}

// NewOutRefundNo returns a unique out_refund_no: "RF", UTC time, 16 hex.
func NewOutRefundNo() string {
	return "RF" + time.Now().UTC().Format("20060102150405") + NewToken()[:16]
}

// send makes one attempt at WeChat Pay (already counted in the ledger) and
// records the outcome. On an unknown outcome it queries once if resolve,
// and never sends again itself. WeChat Pay's answer is recorded with ans,
// when given: the request's final answer, stored in the same transaction.
func (s *RefundService) send(ctx context.Context, r *ledger.Refund, resolve bool, ans *ledger.IdemAnswer) *ledger.Refund {
	wx, err := s.api.CreateRefund(ctx, WxRefundRequest{OutTradeNo: r.OutTradeNo, OutRefundNo: r.OutRefundNo,
		Reason: r.Reason, Amount: r.Amount, Total: r.Total})
	var refused *RefusedError
	switch {
	case err == nil:
		return s.applyWx(ctx, r, wx, ledger.SourceAPI, ans)
	case errors.Is(err, ErrRemoteNotFound) && s.store.Now().Sub(r.CreatedAt) < orderUnknownFor:
		// "Order not found" for an order the ledger holds paid (a verified
		// notice or query said so): WeChat Pay's refund service has been
		// seen not to know an order for minutes after its payment, and the
		// same application later succeeds. Not a refusal yet: the janitor
		// sends it again, with the same out_refund_no.
		err = fmt.Errorf("%w: WeChat Pay does not know the order yet (refund made %v ago): %w",
			ErrOutcomeUnknown, s.store.Now().Sub(r.CreatedAt).Round(time.Second), err)
	case errors.As(err, &refused) && !refused.Verified:
		// Not WeChat Pay's verdict: as unknown as a timeout. The janitor
		// asks after safety_buffer; "not found" then is conclusive, and
		// the refund fails instead of being sent again (see resolve).
		err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	case errors.Is(err, ErrRemoteNotFound), errors.As(err, &refused):
		return s.refused(ctx, r, err)
	}
	slog.WarnContext(ctx, "refund outcome unknown", "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo, "err", err)
	// Tied to this attempt: its last_error (an unsigned refusal makes the
	// janitor fail the refund rather than send it again) must not replace
	// a later attempt's, sent by another instance while this one stalled.
	r = s.apply(ctx, r, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: ledger.RefundUnknown,
		Source: ledger.SourceAPI, LastError: err.Error(), NextCheckAt: s.store.Now().Add(s.cfg.SafetyBuffer), Attempt: r.Attempts})
	if !resolve {
		return r
	}
	// A query right after the call may not find a refund WeChat Pay is
	// still taking in (its refunds show in queries with a delay; WeChat
	// advises querying a minute after applying): only what it finds is
	// recorded now. "Not found" is left to the janitor, which asks again
	// after safety_buffer and only then sends again (same out_refund_no).
	return s.resolve(ctx, r, ledger.SourceQuery, false)
}

// orderUnknownFor is how long after a refund was made an "order not
// found" answer to its application is taken as WeChat Pay not knowing the
// order yet, not as a refusal: the janitor sends it again every safety
// buffer (2 min by default) meanwhile.
const orderUnknownFor = 10 * time.Minute

// refused settles a refund whose sending WeChat Pay refused (a signed
// refusal, or "order not found"): it fails, and gives its amount back,
// only if a query then finds no refund. After a re-send an earlier attempt
// may have landed (and the refusal be about the duplicate). An
// inconclusive query leaves it UNKNOWN for the janitor. (An unsigned
// refusal does not come here: send treats it as an unknown outcome.)
func (s *RefundService) refused(ctx context.Context, r *ledger.Refund, refusal error) *ledger.Refund {
	wx, err := s.api.QueryRefund(ctx, r.OutRefundNo)
	switch {
	case err == nil:
		return s.applyWx(ctx, r, wx, ledger.SourceQuery, nil)
	case errors.Is(err, ErrRemoteNotFound):
		return s.fail(ctx, r, ledger.SourceAPI, refusal.Error())
	}
	slog.WarnContext(ctx, "refused re-send, query inconclusive", "out_trade_no", r.OutTradeNo,
		"out_refund_no", r.OutRefundNo, "refusal", refusal, "err", err)
	return s.apply(ctx, r, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: ledger.RefundUnknown,
		Source: ledger.SourceAPI, LastError: refusal.Error(), NextCheckAt: s.store.Now().Add(s.cfg.SafetyBuffer), Attempt: r.Attempts})
}

// fail records a refund WeChat Pay refused as FAILED (its amount goes
// back) and logs it at warn with the refusal: the user's money does not
// come back, and most refusals are the merchant's (NOT_ENOUGH: the balance
// cannot pay refunds; NO_AUTH), which refuse every refund until someone
// acts, where the 422 the user gets and the FAILED count say nothing of why.
func (s *RefundService) fail(ctx context.Context, r *ledger.Refund, source, refusal string) *ledger.Refund {
	out := s.apply(ctx, r, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: ledger.RefundFailed,
		Source: source, LastError: refusal, Attempt: r.Attempts})
	if out.State == ledger.RefundFailed && r.State != ledger.RefundFailed {
		slog.WarnContext(ctx, "refund refused by WeChat Pay", "out_trade_no", r.OutTradeNo,
			"out_refund_no", r.OutRefundNo, "amount", r.Amount, "refusal", refusal)
	}
	return out
}

// resolve asks WeChat Pay about a pending or ABNORMAL refund and records
// the answer. Only a proof that WeChat never saw it (not found, for a
// refund it never acknowledged) leads to a new attempt, with the same
// out_refund_no, and only if resend: by the janitor that claimed it, at
// least safety_buffer after the last attempt (WeChat's queries lag its
// applications, so a "not found" right after one proves nothing). A
// request, whether the one that recorded the refund or one that took over
// a crashed one's key, leaves "not found" to the janitor. ABNORMAL refunds are
// polled too: they end SUCCESS or CLOSED once the merchant settles them
// by hand, and WeChat Pay's notification of that may never come.
func (s *RefundService) resolve(ctx context.Context, r *ledger.Refund, source string, resend bool) *ledger.Refund {
	waitsForRoom := r.State == ledger.RefundFailed && r.NextCheckAt != nil // watched: a late SUCCESS that did not fit yet, or ABNORMAL
	switch {
	case !r.State.Pending() && r.State != ledger.RefundAbnormal && !waitsForRoom:
		return r
	case r.Unsent():
		// Never sent (it waited for its order's gap): there is nothing to
		// ask WeChat Pay about. The janitor sends it; a request leaves it.
		if !resend {
			return r
		}
		return s.sendAgain(ctx, r, source)
	}
	wx, err := s.api.QueryRefund(ctx, r.OutRefundNo)
	switch {
	case err == nil:
		return s.applyWx(ctx, r, wx, ledger.SourceQuery, nil)
	case errors.Is(err, ErrRemoteNotFound) && r.State == ledger.RefundUnknown && resend && strings.Contains(r.LastError, unverifiedRefusal):
		// The last attempt met an unsigned refusal, and a safety buffer
		// later WeChat Pay does not know the refund: it was refused
		// indeed. Sending again would meet the same refusal.
		return s.fail(ctx, r, ledger.SourceQuery, r.LastError)
	case errors.Is(err, ErrRemoteNotFound) && (r.State == ledger.RefundCreated || r.State == ledger.RefundUnknown):
		if !resend {
			slog.InfoContext(ctx, "refund unknown to WeChat Pay, left to the janitor", "out_trade_no", r.OutTradeNo,
				"out_refund_no", r.OutRefundNo, "source", source)
			return r
		}
		return s.sendAgain(ctx, r, source)
	}
	slog.WarnContext(ctx, "refund query inconclusive", "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo, "err", err)
	next := s.cfg.SafetyBuffer
	if r.State == ledger.RefundProcessing || r.State == ledger.RefundAbnormal || waitsForRoom {
		next = s.cfg.Recheck
	}
	return s.apply(ctx, r, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: r.State, Source: ledger.SourceQuery,
		NextCheckAt: s.store.Now().Add(next)})
}

// sendAgain sends a refund WeChat Pay does not know, with its
// out_refund_no, once the attempt is counted: again after an unknown
// outcome, or for the first time after its order's gap.
func (s *RefundService) sendAgain(ctx context.Context, r *ledger.Refund, source string) *ledger.Refund {
	// A re-send spends the merchant's quota as a new refund does: in a
	// FREQUENCY_LIMITED spell, re-sends beside the new requests kept
	// WeChat Pay over it. Refused, it waits for its next check.
	if lerr := s.admitCall(ctx); lerr != nil {
		slog.InfoContext(ctx, "refund re-send waits for the merchant's call limit", "out_trade_no", r.OutTradeNo,
			"out_refund_no", r.OutRefundNo, "err", lerr)
		return r
	}
	again, cerr := s.store.CountRefundAttempt(ctx, r.OutRefundNo, r.Version, s.store.Now().Add(s.cfg.SafetyBuffer), s.cfg.OrderGap)
	switch {
	case errors.Is(cerr, ledger.ErrRefundWaits):
		slog.InfoContext(ctx, "refund waits for the gap after its order's last application", "out_trade_no", r.OutTradeNo,
			"out_refund_no", r.OutRefundNo, "send_at", again.NextCheckAt, "source", source)
		return again
	case errors.Is(cerr, ledger.ErrNoChange): // someone else moved it on since r was read: theirs to send
		return s.current(ctx, r)
	case cerr != nil:
		slog.ErrorContext(ctx, "count refund attempt", "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo, "err", cerr)
		return r
	}
	msg := "refund unknown to WeChat Pay, sending again"
	if again.Attempts == 1 {
		msg = "refund sent at the end of its order's gap"
	}
	slog.InfoContext(ctx, msg, "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo, "attempt", again.Attempts, "source", source)
	return s.send(ctx, again, false, nil)
}

// current re-reads r from the ledger, or returns r if that fails.
func (s *RefundService) current(ctx context.Context, r *ledger.Refund) *ledger.Refund {
	now, err := s.store.Refund(ctx, r.OutRefundNo)
	if err != nil {
		return r
	}
	return now
}

// applyWx records WeChat Pay's view of the refund. An answer about another
// refund is not recorded: the refund stays as it is for the janitor.
func (s *RefundService) applyWx(ctx context.Context, r *ledger.Refund, wx *WxRefund, source string, ans *ledger.IdemAnswer) *ledger.Refund {
	if wx.OutRefundNo != r.OutRefundNo {
		slog.ErrorContext(ctx, "WeChat Pay answered about another refund", "out_trade_no", r.OutTradeNo,
			"out_refund_no", r.OutRefundNo, "answer_out_refund_no", wx.OutRefundNo)
		return s.recheckLater(ctx, r)
	}
	// The ledger's columns (64), as a refund notice is held to them: a
	// strict MySQL refuses a longer value, SQLite would keep it.
	if len(wx.RefundID) > 64 || r.TransactionID == "" && len(wx.TransactionID) > 64 {
		slog.ErrorContext(ctx, "WeChat Pay answered with a refund_id or transaction_id longer than the ledger keeps (64)",
			"out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo)
		return s.recheckLater(ctx, r)
	}
	state := ledger.RefundState(wx.Status)
	switch state {
	case ledger.RefundProcessing, ledger.RefundSuccess, ledger.RefundClosed, ledger.RefundAbnormal:
	default:
		slog.ErrorContext(ctx, "unexpected refund status", "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo, "status", wx.Status)
		return s.recheckLater(ctx, r)
	}
	return s.apply(ctx, r, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: state, RefundID: wx.RefundID,
		TransactionID: wx.TransactionID, Amount: wx.Amount, SuccessTime: wx.SuccessTime, AcceptTime: wx.CreateTime, Source: source,
		Ref: wx.RefundID, NextCheckAt: s.store.Now().Add(s.cfg.Recheck), Answer: ans})
}

// recheckLater leaves r as it is until the next recheck: an answer it
// cannot record must not have the janitor ask again at the end of its
// short claim (every 30 s, spending WeChat Pay's query quota).
func (s *RefundService) recheckLater(ctx context.Context, r *ledger.Refund) *ledger.Refund {
	return s.apply(ctx, r, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: r.State, Source: ledger.SourceQuery,
		NextCheckAt: s.store.Now().Add(s.cfg.Recheck)})
}

// apply records an update; a stale or repeated one leaves the refund as
// the ledger has it. If the ledger cannot be written the janitor settles
// the refund later, so the caller just gets the last known state.
func (s *RefundService) apply(ctx context.Context, r *ledger.Refund, u ledger.RefundUpdate) *ledger.Refund {
	ctx, cancel := recordContext(ctx)
	defer cancel()
	out, err := s.store.ApplyRefund(ctx, u)
	switch {
	case errors.Is(err, ledger.ErrNoChange) && u.Attempt > 0 && out != nil && out.Attempts != u.Attempt:
		// Another instance sent the refund again while this one stalled:
		// the refund waits for that attempt's answer.
		slog.WarnContext(ctx, "verdict on an earlier attempt not recorded", "out_trade_no", r.OutTradeNo,
			"out_refund_no", r.OutRefundNo, "state", u.State, "attempt", u.Attempt, "attempts", out.Attempts,
			"verdict", u.LastError)
	case err != nil && !errors.Is(err, ledger.ErrAlreadyRecorded) && !errors.Is(err, ledger.ErrNoChange):
		slog.ErrorContext(ctx, "record refund outcome", "out_trade_no", r.OutTradeNo, "out_refund_no", r.OutRefundNo,
			"state", u.State, "err", err)
	}
	if out == nil {
		return r
	}
	return out
}

// recordTimeout bounds a ledger write that records what WeChat Pay said.
const recordTimeout = 5 * time.Second

// recordContext gives a ledger write its own bound instead of what is left
// of the WeChat Pay call budget: an answer that came as the budget ran out
// must still be recorded, and the request's answer stored under its key.
func recordContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
}

// answerFor renders the stored answer of a refund request: 201 when WeChat
// Pay accepted it, 202 while the outcome is being established, 422 when
// WeChat Pay refused it.
func answerFor(r *ledger.Refund) *Answer {
	status := http.StatusCreated
	var v any = userView(r)
	switch r.State {
	case ledger.RefundCreated, ledger.RefundUnknown:
		status = http.StatusAccepted
	case ledger.RefundFailed:
		status = http.StatusUnprocessableEntity
		v = map[string]any{"code": CodeUnprocessable, "message": "WeChat Pay refused the refund", "refund": userView(r)}
	}
	b, _ := json.Marshal(v) // cannot fail
	return &Answer{Status: status, Body: b}
}

// answer is answerFor with, for a refund waiting for its order's gap, a
// Retry-After: until its slot and one janitor sweep.
func (s *RefundService) answer(r *ledger.Refund) *Answer {
	a := answerFor(r)
	if r.Unsent() && r.NextCheckAt != nil {
		wait := r.NextCheckAt.Sub(s.store.Now()) + time.Duration(s.sweepEvery.Load())
		a.RetryAfter = max((wait + time.Second - 1).Truncate(time.Second), time.Second)
	}
	return a
}

// renderAnswer is answerFor as ledger.IdemAnswer renders it.
func renderAnswer(r *ledger.Refund) (int, []byte) {
	a := answerFor(r)
	return a.Status, a.Body
}

// userView is a refund as its user sees it: without the last error of
// the gateway's calls to WeChat Pay (transport errors name hosts and
// proxies; finance sees it in the ledger API).
func userView(r *ledger.Refund) *ledger.Refund {
	v := *r
	v.LastError = ""
	return &v
}

// Get returns a refund to its requester. Another user's refund is
// answered like an unknown one, word for word, so refund numbers cannot
// be probed.
func (s *RefundService) Get(ctx context.Context, openid, outRefundNo string) (*ledger.Refund, error) {
	r, err := s.store.Refund(ctx, outRefundNo)
	if err == nil && r.Requester != openid {
		err = fmt.Errorf("refund %s belongs to another user: %w", outRefundNo, ledger.ErrNotFound)
	}
	if err != nil {
		return nil, ledgerError(err)
	}
	return r, nil
}

// inFlightRetry is the Retry-After of a 409 EIN_FLIGHT: the request
// holding the key usually has its answer stored by then (a holder that
// died keeps it for refunds.in_flight; asking again meanwhile is cheap).
const inFlightRetry = 2 * time.Second

// inFlight sets a 409 EIN_FLIGHT's Retry-After.
func inFlight(e *Error) *Error {
	e.RetryAfter = inFlightRetry
	return e
}
