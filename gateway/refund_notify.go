package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"paygateway/ledger"
)

// wxRefundNotice is the decrypted resource of a REFUND.* notification.
// (The notification calls the status refund_status; the query API status.)
type wxRefundNotice struct {
	MchID         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	OutRefundNo   string `json:"out_refund_no"`
	RefundID      string `json:"refund_id"`
	RefundStatus  string `json:"refund_status"`
	SuccessTime   string `json:"success_time"`
	Amount        struct {
		Total  int64 `json:"total"`
		Refund int64 `json:"refund"`
	} `json:"amount"`
}

var refundEvents = map[string]ledger.RefundState{
	"REFUND.SUCCESS":  ledger.RefundSuccess,
	"REFUND.ABNORMAL": ledger.RefundAbnormal,
	"REFUND.CLOSED":   ledger.RefundClosed,
}

// HandleRefund processes a refund notification: verified and decrypted
// like payment notifications, stored once, and applied to the refund's
// state machine. Duplicates and late, out-of-order notices are answered
// as successes and change nothing. A nil error means the ledger committed.
func (p *Processor) HandleRefund(ctx context.Context, header http.Header, body []byte) error {
	n, err := p.notices.Verify(ctx, header, body)
	if err != nil {
		return err
	}
	state, ok := refundEvents[n.EventType]
	if !ok {
		return &Error{Code: CodeInvalid, Message: "unsupported event_type " + n.EventType, Err: errSignedRefusal}
	}
	return p.guarded(ctx, n, func() error {
		if err := p.decrypt(ctx, n); err != nil {
			return err
		}
		var r wxRefundNotice
		if err := json.Unmarshal(n.Plaintext, &r); err != nil {
			return Errorf(CodeInvalid, "resource is not a refund", err)
		}
		// Refund notices carry no appid: only the mchid is checked.
		if err := p.checkMerchant(r.MchID, p.cfg.AppID); err != nil {
			return err
		}
		if err := validRefundNotice(r, state); err != nil {
			return err
		}
		return p.applyRefundNotice(ctx, n, r, state)
	})
}

func (p *Processor) applyRefundNotice(ctx context.Context, n *Notice, r wxRefundNotice, state ledger.RefundState) error {
	success, _ := time.Parse(time.RFC3339, r.SuccessTime)
	_, err := p.store.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: state,
		RefundID: r.RefundID, TransactionID: r.TransactionID, Amount: r.Amount.Refund, SuccessTime: success,
		Source: ledger.SourceCallback, Ref: n.ID,
		Notice: &ledger.Notice{NotifyID: n.ID, Source: ledger.SourceCallback, EventType: n.EventType,
			ResourceType: n.ResourceType, Summary: n.Summary, OutTradeNo: r.OutTradeNo,
			TransactionID: r.TransactionID, OutRefundNo: r.OutRefundNo, Plaintext: string(n.Plaintext),
			CreateTime: n.CreateTime}})
	switch {
	case errors.Is(err, ledger.ErrNoChange), errors.Is(err, ledger.ErrNotFound):
		return nil // stored and flagged; redelivery would change nothing
	case errors.Is(err, ledger.ErrAlreadyRecorded):
		NoteDuplicate(ctx)
	}
	return notifyError(err)
}

func validRefundNotice(r wxRefundNotice, state ledger.RefundState) error {
	switch {
	case r.OutRefundNo == "" || len(r.OutRefundNo) > 64:
		return &Error{Code: CodeInvalid, Message: "out_refund_no missing or too long"}
	case r.OutTradeNo == "" || len(r.OutTradeNo) > 64:
		return &Error{Code: CodeInvalid, Message: "out_trade_no missing or too long"}
	case len(r.RefundID) > 64 || len(r.TransactionID) > 64: // the ledger's columns
		return &Error{Code: CodeInvalid, Message: "refund_id or transaction_id longer than 64"}
	case r.RefundStatus != string(state):
		return &Error{Code: CodeInvalid, Message: "refund_status " + r.RefundStatus + " does not match the event"}
	case r.Amount.Refund <= 0:
		return &Error{Code: CodeInvalid, Message: "amount.refund must be positive"}
	}
	return nil
}

// Locker returns the advisory locker the processor uses, for other
// services to share (the refund API).
func (p *Processor) Locker() Locker { return p.locker }
