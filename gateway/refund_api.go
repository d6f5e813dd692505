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
//   - *RefusedError: a definite refusal, nothing applied.
type RefundAPI interface {
	CreateRefund(ctx context.Context, req WxRefundRequest) (*WxRefund, error)
	QueryRefund(ctx context.Context, outRefundNo string) (*WxRefund, error)
}

// Errors a RefundAPI returns (wrapped).
var (
	ErrRemoteNotFound = errors.New("wechat pay: not found")
	ErrOutcomeUnknown = errors.New("wechat pay: outcome unknown")
)

// RefusedError is WeChat Pay's definite "no" (e.g. NOT_ENOUGH).
type RefusedError struct {
	Status  int
	Code    string
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("wechat pay refused: %d %s: %s", e.Status, e.Code, e.Message)
}

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
