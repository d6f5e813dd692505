package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RefundAPI is WeChat Pay's refund API as the gateway uses it
// (gateway/wechatpay.RefundAdapter wraps the wechatpay-go client). Errors:
//   - ErrRemoteNotFound: WeChat Pay has no such refund (query) or no such
//     paid order (create); a definite answer;
//   - ErrOutcomeUnknown: timeout, reset, 5xx, unverifiable answer: WeChat
//     may or may not have applied the call; query before any new attempt;
//   - *RefusedError: a refusal; definite (nothing applied) only when
//     Verified, i.e. signed by WeChat Pay.
type RefundAPI interface {
	CreateRefund(ctx context.Context, req WxRefundRequest) (*WxRefund, error)
	QueryRefund(ctx context.Context, outRefundNo string) (*WxRefund, error)
}

// Errors a RefundAPI returns (wrapped).
var (
	ErrRemoteNotFound = errors.New("wechat pay: not found")
	ErrOutcomeUnknown = errors.New("wechat pay: outcome unknown")
)

// RefusedError is a 4xx "no" to a call (e.g. NOT_ENOUGH). Only a Verified
// one, signed by WeChat Pay, is WeChat Pay's own verdict: an unsigned one
// may come from a proxy or a WAF on the way back, after WeChat Pay took
// the call, so it is no proof that nothing was applied.
type RefusedError struct {
	Status   int
	Code     string
	Message  string
	Verified bool
}

func (e *RefusedError) Error() string {
	if !e.Verified {
		return fmt.Sprintf("%s: %d %s: %s", unverifiedRefusal, e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("wechat pay refused: %d %s: %s", e.Status, e.Code, e.Message)
}

// unverifiedRefusal starts the error of a refusal without WeChat Pay's
// signature; a refund's last_error holding it tells the janitor that the
// last attempt met one (see RefundService.resolve).
const unverifiedRefusal = "unsigned refusal (not verifiably WeChat Pay's)"

// WxRefundRequest asks WeChat Pay for a refund of Amount out of the
// order's paid Total (fen). OutRefundNo is reused on every retry.
type WxRefundRequest struct {
	OutTradeNo  string
	OutRefundNo string
	Reason      string
	Amount      int64
	Total       int64
}

// WxRefund is WeChat Pay's view of a refund.
type WxRefund struct {
	OutRefundNo   string
	RefundID      string
	OutTradeNo    string
	TransactionID string
	Status        string // PROCESSING, SUCCESS, CLOSED, ABNORMAL
	Amount        int64
	CreateTime    time.Time // when WeChat Pay accepted the refund; zero if not stated
	SuccessTime   time.Time
}
