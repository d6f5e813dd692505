package wechatpay

import (
	"context"
	"errors"
	"fmt"

	"paygateway/gateway"
)

var _ gateway.RefundAPI = RefundAdapter{}

// RefundAdapter presents Client's refund calls as a gateway.RefundAPI,
// translating the error classes.
type RefundAdapter struct{ Client *Client }

// CreateRefund implements gateway.RefundAPI.
func (a RefundAdapter) CreateRefund(ctx context.Context, req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	r, err := a.Client.CreateRefund(ctx, RefundRequest{OutTradeNo: req.OutTradeNo, OutRefundNo: req.OutRefundNo,
		Reason: req.Reason, Amount: req.Amount, Total: req.Total})
	if err != nil {
		return nil, translate(err)
	}
	return toGatewayRefund(r), nil
}

// QueryRefund implements gateway.RefundAPI.
func (a RefundAdapter) QueryRefund(ctx context.Context, outRefundNo string) (*gateway.WxRefund, error) {
	r, err := a.Client.QueryRefund(ctx, outRefundNo)
	if err != nil {
		return nil, translate(err)
	}
	return toGatewayRefund(r), nil
}

func toGatewayRefund(r *Refund) *gateway.WxRefund {
	return &gateway.WxRefund{OutRefundNo: r.OutRefundNo, RefundID: r.RefundID, OutTradeNo: r.OutTradeNo,
		TransactionID: r.TransactionID, Status: r.Status, Amount: r.Amount, CreateTime: r.CreateTime, SuccessTime: r.SuccessTime}
}

// translate maps Client errors onto the gateway's; anything unclassified
// (e.g. never sent) counts as unknown, which is always safe: the refund is
// queried before any new attempt.
func translate(err error) error {
	var be *BusinessError
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("%w: %w", gateway.ErrRemoteNotFound, err)
	case errors.As(err, &be):
		return &gateway.RefusedError{Status: be.Status, Code: be.Code, Message: be.Message, Verified: be.Verified}
	}
	return fmt.Errorf("%w: %w", gateway.ErrOutcomeUnknown, err)
}
