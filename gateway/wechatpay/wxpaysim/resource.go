package wxpaysim

import (
	"encoding/json"
	"fmt"
	"time"
)

// Transaction is WeChat Pay's transaction object, as returned by the order
// query API and encrypted in TRANSACTION.SUCCESS notifications. Amounts are fen.
type Transaction struct {
	AppID          string            `json:"appid"`
	MchID          string            `json:"mchid"`
	OutTradeNo     string            `json:"out_trade_no"`
	TransactionID  string            `json:"transaction_id,omitempty"`
	TradeType      string            `json:"trade_type,omitempty"`
	TradeState     string            `json:"trade_state"`
	TradeStateDesc string            `json:"trade_state_desc"`
	BankType       string            `json:"bank_type,omitempty"`
	Attach         string            `json:"attach"`
	SuccessTime    string            `json:"success_time,omitempty"` // RFC3339, +08:00
	Payer          *Payer            `json:"payer,omitempty"`
	Amount         TransactionAmount `json:"amount"`
}

// Payer identifies the paying user.
type Payer struct {
	OpenID string `json:"openid"`
}

// TransactionAmount is the amount block of a transaction, in fen.
type TransactionAmount struct {
	Total         int64  `json:"total"`
	PayerTotal    int64  `json:"payer_total,omitempty"`
	Currency      string `json:"currency"`
	PayerCurrency string `json:"payer_currency"`
}

// RefundNotice is the plaintext of a REFUND.* notification. Note the field is
// refund_status here while the query API calls it status.
type RefundNotice struct {
	MchID               string             `json:"mchid"`
	OutTradeNo          string             `json:"out_trade_no"`
	TransactionID       string             `json:"transaction_id"`
	OutRefundNo         string             `json:"out_refund_no"`
	RefundID            string             `json:"refund_id"`
	RefundStatus        string             `json:"refund_status"`
	SuccessTime         string             `json:"success_time,omitempty"` // RFC3339, +08:00
	UserReceivedAccount string             `json:"user_received_account"`
	Amount              RefundNoticeAmount `json:"amount"`
}

// RefundNoticeAmount is the amount block of a refund notification, in fen.
type RefundNoticeAmount struct {
	Total       int64 `json:"total"`
	Refund      int64 `json:"refund"`
	PayerTotal  int64 `json:"payer_total"`
	PayerRefund int64 `json:"payer_refund"`
}

// PaymentNotification builds a signed TRANSACTION.SUCCESS notification.
func (k *Keys) PaymentNotification(tx Transaction, mode SignMode, now time.Time) (Notification, error) {
	plain, err := json.Marshal(tx)
	if err != nil {
		return Notification{}, fmt.Errorf("payment notification %s: %w", tx.OutTradeNo, err)
	}
	return k.NewNotification("", "TRANSACTION.SUCCESS", "transaction", plain, mode, now)
}

// RefundNotification builds a signed REFUND.<RefundStatus> notification
// (SUCCESS, ABNORMAL or CLOSED).
func (k *Keys) RefundNotification(r RefundNotice, mode SignMode, now time.Time) (Notification, error) {
	switch r.RefundStatus {
	case "SUCCESS", "ABNORMAL", "CLOSED":
	default:
		return Notification{}, fmt.Errorf("refund notification %s: no event for status %q", r.OutRefundNo, r.RefundStatus)
	}
	plain, err := json.Marshal(r)
	if err != nil {
		return Notification{}, fmt.Errorf("refund notification %s: %w", r.OutRefundNo, err)
	}
	return k.NewNotification("", "REFUND."+r.RefundStatus, "refund", plain, mode, now)
}

// wechatTime formats t the way WeChat Pay does (RFC3339 in UTC+8).
func wechatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(beijing).Format(time.RFC3339)
}
