package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Payment is one order's payment as the ledger knows it. Money is in fen.
type Payment struct {
	OutTradeNo     string       `json:"out_trade_no"`
	TransactionID  string       `json:"transaction_id,omitempty"`
	State          PaymentState `json:"state"`
	Registered     bool         `json:"registered"`
	ExpectedAmount int64        `json:"expected_amount,omitempty"`
	AmountTotal    int64        `json:"amount_total,omitempty"`
	PayerTotal     int64        `json:"payer_total,omitempty"`
	RefundedTotal  int64        `json:"refunded_total"`
	Currency       string       `json:"currency"`
	PayerOpenID    string       `json:"payer_openid,omitempty"`
	AppID          string       `json:"appid,omitempty"`
	MchID          string       `json:"mchid,omitempty"`
	ExpireAt       *time.Time   `json:"expire_at,omitempty"`
	SuccessTime    *time.Time   `json:"success_time,omitempty"`
	Version        int64        `json:"version"`
	CreatedAt      time.Time    `json:"created_at"`
	UpdatedAt      time.Time    `json:"updated_at"`
}

type paymentRow struct {
	ID             uint64 `gorm:"primaryKey"`
	OutTradeNo     string
	TransactionID  *string
	State          string
	Registered     bool
	ExpectedAmount *int64
	AmountTotal    *int64
	PayerTotal     *int64
	RefundedTotal  int64
	Currency       string
	PayerOpenID    *string `gorm:"column:payer_openid"`
	// RegisteredOpenID is the payer_openid the order was registered
	// with ("" for none), kept apart from the payer a callback names, so
	// that a retried registration is compared with what was asked, not
	// paid. NULL on rows registered before migration 0037 by a binary
	// that did not know it: payer_openid held it until a callback came.
	RegisteredOpenID *string `gorm:"column:registered_openid"`
	AppID            *string `gorm:"column:appid"`
	MchID            *string `gorm:"column:mchid"`
	ExpireAt         *time.Time
	// NextCheckAt is when the lost-callback compensation asks WeChat Pay
	// about an EXPECTED order again (NULL: once the safety buffer passed).
	NextCheckAt *time.Time `gorm:"column:next_check_at"`
	// RefundSentAt is when the gateway last sent one of the order's refund
	// applications to WeChat Pay, which refuses the next one sooner than a
	// minute after (see RefundRequest.Gap); RefundSlotAt the latest time
	// booked for a refund of the order waiting to be sent.
	RefundSentAt *time.Time `gorm:"column:refund_sent_at"`
	RefundSlotAt *time.Time `gorm:"column:refund_slot_at"`
	SuccessTime  *time.Time
	Version      int64
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

func (paymentRow) TableName() string { return "payments" }

func (r *paymentRow) payment() *Payment {
	return &Payment{
		OutTradeNo: r.OutTradeNo, TransactionID: deref(r.TransactionID), State: PaymentState(r.State),
		Registered: r.Registered, ExpectedAmount: derefInt(r.ExpectedAmount), AmountTotal: derefInt(r.AmountTotal),
		PayerTotal: derefInt(r.PayerTotal), RefundedTotal: r.RefundedTotal, Currency: r.Currency,
		PayerOpenID: deref(r.PayerOpenID), AppID: deref(r.AppID), MchID: deref(r.MchID),
		ExpireAt: utcPtr(r.ExpireAt), SuccessTime: utcPtr(r.SuccessTime), Version: r.Version,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
}

// Order is a payment the business expects, registered before WeChat Pay
// tells us it was paid.
type Order struct {
	OutTradeNo  string
	AmountTotal int64
	PayerOpenID string
	ExpireAt    time.Time
}

// RegisterOrder records an expected order in state EXPECTED.
// Registering the same order again with the same amount and payer returns
// the stored payment and ErrAlreadyRecorded, whatever expire_at it names:
// the first registration's deadline stands (a retry that computes a new
// one must not fail), and the answer carries it, so the business makes the
// prepay with that deadline. Another amount or payer gives ErrConflict.
// If a callback recorded the order first, the order is marked registered;
// a paid amount that differs gives *AmountMismatchError and is flagged
// (AMOUNT_MISMATCH, ref "register:<out_trade_no>"): the order was paid,
// and its stock confirmed, at a price the business did not ask for.
func (s *Store) RegisterOrder(ctx context.Context, o Order) (*Payment, error) {
	var out *Payment
	var mismatch *AmountMismatchError
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		out, mismatch = nil, nil
		row, err := findPayment(lockForUpdate(tx), o.OutTradeNo)
		if errors.Is(err, ErrNotFound) {
			out, err = s.insertExpected(tx, o)
			if !errors.Is(err, gorm.ErrDuplicatedKey) {
				return err
			}
			// A twin registration (or a callback) inserted it after our
			// read: the unique key waited for its commit; take its row.
			row, err = findPayment(lockForUpdate(tx), o.OutTradeNo)
		}
		if err != nil {
			return err
		}
		out, err = s.registerExisting(tx, row, o)
		if errors.As(err, &mismatch) {
			return s.recordAnomaly(tx, Anomaly{Kind: AnomalyAmountMismatch, Ref: "register:" + o.OutTradeNo,
				OutTradeNo: o.OutTradeNo, Detail: mismatch.Error()})
		}
		return err
	})
	if err == nil && mismatch != nil {
		err = mismatch
	}
	if err != nil {
		return out, fmt.Errorf("register order %s: %w", o.OutTradeNo, err)
	}
	return out, nil
}

func (s *Store) insertExpected(tx *gorm.DB, o Order) (*Payment, error) {
	now := s.now()
	expire := dbTime(o.ExpireAt)
	row := paymentRow{OutTradeNo: o.OutTradeNo, State: string(PaymentExpected), Registered: true,
		ExpectedAmount: &o.AmountTotal, Currency: "CNY", PayerOpenID: nonEmpty(o.PayerOpenID),
		RegisteredOpenID: &o.PayerOpenID, ExpireAt: &expire, CreatedAt: now, UpdatedAt: now}
	if err := tx.Create(&row).Error; err != nil {
		return nil, fmt.Errorf("insert payment: %w", err)
	}
	t := Transition{Entity: EntityPayment, EntityKey: o.OutTradeNo, OutTradeNo: o.OutTradeNo,
		From: string(PaymentNone), To: string(PaymentExpected), Source: SourceAPI}
	return row.payment(), s.appendHistory(tx, t)
}

func (s *Store) registerExisting(tx *gorm.DB, row *paymentRow, o Order) (*Payment, error) {
	if row.Registered {
		if derefInt(row.ExpectedAmount) == o.AmountTotal && row.registeredWith(o.PayerOpenID) {
			return row.payment(), ErrAlreadyRecorded
		}
		return row.payment(), ErrConflict
	}
	if row.AmountTotal != nil && *row.AmountTotal != o.AmountTotal {
		return row.payment(), &AmountMismatchError{OutTradeNo: o.OutTradeNo, Expected: o.AmountTotal, Got: *row.AmountTotal}
	}
	if flag := payerMismatch(o.OutTradeNo, o.PayerOpenID, deref(row.PayerOpenID)); flag != nil { // paid before it was registered
		if err := s.recordAnomaly(tx, *flag); err != nil {
			return nil, err
		}
	}
	expire, now := dbTime(o.ExpireAt), s.now()
	updates := map[string]any{"registered": true, "expected_amount": o.AmountTotal, "expire_at": expire,
		"registered_openid": o.PayerOpenID, "version": gorm.Expr("version + 1"), "updated_at": now}
	if err := tx.Model(&paymentRow{}).Where("id = ?", row.ID).Updates(updates).Error; err != nil {
		return nil, fmt.Errorf("mark registered: %w", err)
	}
	row.Registered, row.ExpectedAmount, row.ExpireAt, row.UpdatedAt = true, &o.AmountTotal, &expire, now
	row.RegisteredOpenID = &o.PayerOpenID
	row.Version++
	return row.payment(), nil
}

// registrationOpenID is the openid the order was registered with. Rows
// registered by a binary before migration 0037 kept it in payer_openid.
func (row *paymentRow) registrationOpenID() string {
	if row.RegisteredOpenID == nil {
		return deref(row.PayerOpenID)
	}
	return *row.RegisteredOpenID
}

// registeredWith tells whether a registration naming openid is the one
// the order was registered with. Migration 0038 filled registered_openid
// from payer_openid, which on a paid order a callback may have set: a
// retry without an openid of such an order is the same registration (the
// one case this cannot tell from a real difference: an order registered
// with its payer's openid and retried without one, which changes nothing).
func (row *paymentRow) registeredWith(openid string) bool {
	reg := row.registrationOpenID()
	if reg == openid {
		return true
	}
	return openid == "" && row.TransactionID != nil && reg == deref(row.PayerOpenID)
}

// Payment returns the payment of an order, or ErrNotFound.
func (s *Store) Payment(ctx context.Context, outTradeNo string) (*Payment, error) {
	row, err := findPayment(s.db.WithContext(ctx), outTradeNo)
	if err != nil {
		return nil, fmt.Errorf("read payment %s: %w", outTradeNo, err)
	}
	return row.payment(), nil
}

func findPayment(tx *gorm.DB, outTradeNo string) (*paymentRow, error) {
	var row paymentRow
	err := tx.Where("out_trade_no = ?", outTradeNo).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &row, nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func derefInt(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
