package wxpaysim

import (
	"maps"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// defaultHold bounds how long an apply-then-timeout fault holds a connection
// when the client never gives up.
const defaultHold = 30 * time.Second

// Faults are switches for the merchant API endpoints (/v3/…). Counters
// (…Next) fire deterministically on the next matching requests, before the
// rates are consulted; a POST over PostsPerSecond comes first, then the
// first matching kind in the order frequency-limited, 5xx, drop,
// apply-then-timeout, order-unknown, apply-then-forbidden wins. The refund
// outcomes (RefundOutcome, RefundClosed…, RefundAbnormal…) are decided per
// refund as it settles, and RefundQueryLag per query, whatever PathPrefix
// says.
type Faults struct {
	// PathPrefix restricts faults to paths with this prefix ("" = all /v3/).
	PathPrefix string `json:"path_prefix,omitempty"`
	// Delay is added before every matching request is handled.
	Delay time.Duration `json:"delay,omitempty"`
	// Fail5xx answers 500 SYSTEM_ERROR without applying the request.
	Fail5xxNext int     `json:"fail_5xx_next,omitempty"`
	Fail5xxRate float64 `json:"fail_5xx_rate,omitempty"`
	// Drop closes the connection without answering and without applying.
	DropNext int     `json:"drop_next,omitempty"`
	DropRate float64 `json:"drop_rate,omitempty"`
	// ApplyThenTimeout applies the request (e.g. creates the refund), then
	// holds the connection until the client gives up (or HoldFor passes)
	// and closes it without answering.
	ApplyThenTimeoutNext int     `json:"apply_then_timeout_next,omitempty"`
	ApplyThenTimeoutRate float64 `json:"apply_then_timeout_rate,omitempty"`
	// OrderUnknown answers a refund application (POST only) 404
	// RESOURCE_NOT_EXISTS "订单不存在" without applying it, as WeChat Pay's
	// refund service has been reported to for a few minutes after an
	// order was paid; sending the same request later succeeds.
	OrderUnknownNext int     `json:"order_unknown_next,omitempty"`
	OrderUnknownRate float64 `json:"order_unknown_rate,omitempty"`
	// ApplyThenForbidden applies a POST (e.g. creates the refund), then
	// answers 403 without WeChat Pay's signature, as a proxy or a WAF on
	// the way back might: a refusal that is no proof of anything.
	ApplyThenForbiddenNext int     `json:"apply_then_forbidden_next,omitempty"`
	ApplyThenForbiddenRate float64 `json:"apply_then_forbidden_rate,omitempty"`
	// FrequencyLimited answers 429 FREQUENCY_LIMITED, signed, without
	// applying the request, as WeChat Pay does above a merchant's quota.
	FrequencyLimitedNext int     `json:"frequency_limited_next,omitempty"`
	FrequencyLimitedRate float64 `json:"frequency_limited_rate,omitempty"`
	// NotEnough answers an application (POST only) 403 NOT_ENOUGH, signed,
	// without applying it, as WeChat Pay does while the merchant's balance
	// cannot pay refunds: a refusal, final for that application.
	NotEnoughNext int `json:"not_enough_next,omitempty"`
	// PostsPerSecond, when positive, is the merchant's quota of
	// applications (POSTs under PathPrefix) per second (WeChat Pay documents 150 refund
	// applications a second): the ones over it in a second are answered
	// as FrequencyLimited.
	PostsPerSecond int `json:"posts_per_second,omitempty"`
	// HoldFor bounds the apply-then-timeout hold; 0 means 30 s.
	HoldFor time.Duration `json:"hold_for,omitempty"`
	// RefundQueryLag hides a refund from queries until it is that old (by
	// Options.Now): WeChat Pay's refund queries lag its applications (it
	// advises querying a minute after applying). Until then a query
	// answers 404 RESOURCE_NOT_EXISTS "退款单不存在", signed, as for a
	// refund that does not exist; a create sent again with the same
	// out_refund_no still answers the refund.
	RefundQueryLag time.Duration `json:"refund_query_lag,omitempty"`
	// RefundOutcome is the final status of refunds settled from now on:
	// "" or SUCCESS, CLOSED or ABNORMAL.
	RefundOutcome string `json:"refund_outcome,omitempty"`
	// RefundClosed and RefundAbnormal decide the outcome of one refund as
	// it settles, before RefundOutcome: WeChat Pay closes it (the money
	// goes back to the order) or holds it ABNORMAL for a person to settle
	// (see AbnormalResolveAfter and ResolveAbnormal). Counters come before
	// rates, CLOSED before ABNORMAL.
	RefundClosedNext   int     `json:"refund_closed_next,omitempty"`
	RefundClosedRate   float64 `json:"refund_closed_rate,omitempty"`
	RefundAbnormalNext int     `json:"refund_abnormal_next,omitempty"`
	RefundAbnormalRate float64 `json:"refund_abnormal_rate,omitempty"`
	// AbnormalResolveAfter is how long a refund stays ABNORMAL before a
	// person resolves it to SUCCESS (REFUND.SUCCESS is notified); 0 leaves
	// it ABNORMAL until ResolveAbnormal.
	AbnormalResolveAfter time.Duration `json:"abnormal_resolve_after,omitempty"`
	// Seed makes the rates reproducible; 0 picks a random seed.
	Seed uint64 `json:"seed,omitempty"`
}

// faultKind is the fault chosen for one request.
type faultKind int

const (
	faultNone faultKind = iota
	faultFail5xx
	faultDrop
	faultApplyThenTimeout
	faultOrderUnknown
	faultApplyThenForbidden
	faultFrequencyLimited
	faultNotEnough
)

// fault is what one request suffers.
type fault struct {
	kind  faultKind
	delay time.Duration
	hold  time.Duration
}

// SetFaults replaces all fault switches.
func (s *Sim) SetFaults(f Faults) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.faults = f
	if f.Seed != 0 {
		s.rng = rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
	}
}

// CurrentFaults returns the fault switches with the counters left.
func (s *Sim) CurrentFaults() Faults {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.faults
}

// takeFault decides the fault for a request to path and consumes a counter.
func (s *Sim) takeFault(method, path string) fault {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f := &s.faults
	if !strings.HasPrefix(path, f.PathPrefix) {
		return fault{}
	}
	out := fault{delay: f.Delay, hold: f.HoldFor}
	if out.hold <= 0 {
		out.hold = defaultHold
	}
	switch {
	case method == http.MethodPost && s.overQuota():
		out.kind = faultFrequencyLimited
	case take(&f.FrequencyLimitedNext):
		out.kind = faultFrequencyLimited
	case take(&f.Fail5xxNext):
		out.kind = faultFail5xx
	case take(&f.DropNext):
		out.kind = faultDrop
	case take(&f.ApplyThenTimeoutNext):
		out.kind = faultApplyThenTimeout
	case method == http.MethodPost && take(&f.OrderUnknownNext):
		out.kind = faultOrderUnknown
	case method == http.MethodPost && take(&f.ApplyThenForbiddenNext):
		out.kind = faultApplyThenForbidden
	case method == http.MethodPost && take(&f.NotEnoughNext):
		out.kind = faultNotEnough
	case s.roll(f.FrequencyLimitedRate):
		out.kind = faultFrequencyLimited
	case s.roll(f.Fail5xxRate):
		out.kind = faultFail5xx
	case s.roll(f.DropRate):
		out.kind = faultDrop
	case s.roll(f.ApplyThenTimeoutRate):
		out.kind = faultApplyThenTimeout
	case method == http.MethodPost && s.roll(f.OrderUnknownRate):
		out.kind = faultOrderUnknown
	case method == http.MethodPost && s.roll(f.ApplyThenForbiddenRate):
		out.kind = faultApplyThenForbidden
	}
	if out.kind != faultNone {
		s.countInjected(faultNames[out.kind])
	}
	return out
}

// countInjected counts one fault of kind name; the caller holds fmu.
func (s *Sim) countInjected(name string) {
	if s.injected == nil {
		s.injected = map[string]int{}
	}
	s.injected[name]++
}

var faultNames = map[faultKind]string{faultFail5xx: "5xx", faultDrop: "drop", faultApplyThenTimeout: "apply_then_timeout",
	faultOrderUnknown: "order_unknown", faultApplyThenForbidden: "apply_then_forbidden",
	faultFrequencyLimited: "frequency_limited", faultNotEnough: "not_enough"}

// overQuota counts a POST against PostsPerSecond and reports whether it is
// over the quota of the current second (by Options.Now); the caller holds
// fmu. Refused
// POSTs count too: WeChat Pay counts requests, not applications.
func (s *Sim) overQuota() bool {
	if s.faults.PostsPerSecond <= 0 {
		return false
	}
	sec := s.now().Unix()
	if sec != s.quotaSecond {
		s.quotaSecond, s.quotaUsed = sec, 0
	}
	s.quotaUsed++
	return s.quotaUsed > s.faults.PostsPerSecond
}

// FaultsInjected counts the faults injected so far by kind ("5xx",
// "drop", "apply_then_timeout", "order_unknown", "apply_then_forbidden",
// "frequency_limited", "not_enough",
// "query_lag" for refund queries answered "not found" by RefundQueryLag,
// and "closed" and "abnormal" for refunds settled so), so a run can show
// its faults happened.
func (s *Sim) FaultsInjected() map[string]int {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return maps.Clone(s.injected)
}

// take consumes one from a counter if it is positive.
func take(n *int) bool {
	if *n <= 0 {
		return false
	}
	*n--
	return true
}

// roll reports true with probability p; the caller holds fmu.
func (s *Sim) roll(p float64) bool {
	return p > 0 && s.rng.Float64() < p
}

// refundOutcome decides the status a settling refund ends in and
// consumes a counter; it is called with s.mu held.
func (s *Sim) refundOutcome() string {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f := &s.faults
	out := RefundSuccess
	switch {
	case take(&f.RefundClosedNext):
		out = RefundClosed
	case take(&f.RefundAbnormalNext):
		out = RefundAbnormal
	case s.roll(f.RefundClosedRate):
		out = RefundClosed
	case s.roll(f.RefundAbnormalRate):
		out = RefundAbnormal
	case f.RefundOutcome == RefundClosed || f.RefundOutcome == RefundAbnormal:
		out = f.RefundOutcome
	}
	if out != RefundSuccess {
		s.countInjected(strings.ToLower(out))
	}
	return out
}

// queryLags reports whether queries still hide a refund created at
// created (Faults.RefundQueryLag), counting each such answer; it is
// called with s.mu held.
func (s *Sim) queryLags(created time.Time) bool {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.now().Sub(created) >= s.faults.RefundQueryLag {
		return false
	}
	s.countInjected("query_lag")
	return true
}

// abnormalResolveAfter is Faults.AbnormalResolveAfter.
func (s *Sim) abnormalResolveAfter() time.Duration {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.faults.AbnormalResolveAfter
}

// BillFaults inject differences into trade bills, for reconciliation tests.
type BillFaults struct {
	// DropOutTradeNo omits this order's payment row.
	DropOutTradeNo string `json:"drop_out_trade_no,omitempty"`
	// ChangeAmount shows these amounts (fen) in the payment rows of these
	// out_trade_no instead of the real ones.
	ChangeAmount map[string]int64 `json:"change_amount,omitempty"`
	// ExtraRefund adds a refund row the simulator never executed.
	ExtraRefund *BillRefund `json:"extra_refund,omitempty"`
	// BadHash announces a wrong hash_value for the bill file.
	BadHash bool `json:"bad_hash,omitempty"`
}

// BillRefund is a refund row injected into a bill.
type BillRefund struct {
	OutTradeNo  string `json:"out_trade_no"`
	OutRefundNo string `json:"out_refund_no"`
	RefundID    string `json:"refund_id,omitempty"`
	Amount      int64  `json:"amount"`
}

// SetBillFaults replaces the bill fault switches.
func (s *Sim) SetBillFaults(f BillFaults) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.billFaults = f
}

func (s *Sim) currentBillFaults() BillFaults {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.billFaults
}
