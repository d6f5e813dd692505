package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// RefundState is where a refund stands in its state machine.
type RefundState string

// Refund states. CREATED: recorded, not yet answered by WeChat Pay.
// UNKNOWN: a call went out and no trustworthy answer came back; it is
// settled by a query before any new attempt. FAILED: WeChat Pay refused
// it for certain, no money moved. CLOSED: WeChat Pay closed it, the money
// went back. ABNORMAL needs a person but may still end SUCCESS or CLOSED.
const (
	RefundNone       RefundState = ""
	RefundCreated    RefundState = "CREATED"
	RefundProcessing RefundState = "PROCESSING"
	RefundUnknown    RefundState = "UNKNOWN"
	RefundSuccess    RefundState = "SUCCESS"
	RefundClosed     RefundState = "CLOSED"
	RefundAbnormal   RefundState = "ABNORMAL"
	RefundFailed     RefundState = "FAILED"
)

// Pending reports whether the refund still waits for WeChat Pay's word.
func (s RefundState) Pending() bool {
	return s == RefundCreated || s == RefundProcessing || s == RefundUnknown
}

// Unsent reports whether the refund was never sent to WeChat Pay: it was
// recorded while its order's gap ran (CreateRefund) and waits for the
// janitor to send it from NextCheckAt on.
func (r *Refund) Unsent() bool { return r.State == RefundCreated && r.Attempts == 0 }

// returnsMoney reports whether a refund in this state no longer counts
// against the order's refundable amount.
func (s RefundState) returnsMoney() bool { return s == RefundClosed || s == RefundFailed }

var refundMachine = machine{
	string(RefundNone): {string(RefundCreated)},
	string(RefundCreated): {string(RefundProcessing), string(RefundUnknown), string(RefundSuccess),
		string(RefundClosed), string(RefundAbnormal), string(RefundFailed)},
	string(RefundUnknown): {string(RefundProcessing), string(RefundSuccess), string(RefundClosed),
		string(RefundAbnormal), string(RefundFailed)},
	string(RefundProcessing): {string(RefundSuccess), string(RefundClosed), string(RefundAbnormal)},
	string(RefundAbnormal):   {string(RefundSuccess), string(RefundClosed)},
	// FAILED is the gateway's own conclusion (WeChat Pay refused the
	// application and then had no such refund). If WeChat Pay later says it
	// paid it after all, the money left: it is recorded, as a payment's
	// CLOSED → SUCCESS is, if its amount still fits what was paid. If it
	// says it holds it (PROCESSING, ABNORMAL), the money may yet leave: the
	// amount counts again, so that no other refund takes it meanwhile.
	string(RefundFailed): {string(RefundSuccess), string(RefundProcessing), string(RefundAbnormal)},
}

// Refund is one refund of an order as the ledger knows it. Money is fen.
type Refund struct {
	OutRefundNo   string      `json:"out_refund_no"`
	OutTradeNo    string      `json:"out_trade_no"`
	TransactionID string      `json:"transaction_id,omitempty"`
	RefundID      string      `json:"refund_id,omitempty"`
	State         RefundState `json:"state"`
	Amount        int64       `json:"amount"`
	Total         int64       `json:"total"`
	Reason        string      `json:"reason,omitempty"`
	Requester     string      `json:"-"`
	Attempts      int         `json:"attempts"`
	LastError     string      `json:"last_error,omitempty"`
	NextCheckAt   *time.Time  `json:"next_check_at,omitempty"`
	SuccessTime   *time.Time  `json:"success_time,omitempty"`
	// AcceptedAt is when WeChat Pay accepted the refund (its create_time),
	// once an answer of WeChat's named it: the day its bill lists it.
	AcceptedAt *time.Time `json:"accepted_at,omitempty"`
	Version    int64      `json:"version"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

type refundRow struct {
	ID            uint64 `gorm:"primaryKey"`
	OutRefundNo   string
	OutTradeNo    string
	TransactionID *string
	RefundID      *string
	State         string
	Amount        int64
	Total         int64
	Reason        string
	Requester     string
	Attempts      int
	LastError     string
	NextCheckAt   *time.Time
	SuccessTime   *time.Time
	AcceptedAt    *time.Time
	Version       int64
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

func (refundRow) TableName() string { return "refunds" }

func (r *refundRow) refund() *Refund {
	return &Refund{OutRefundNo: r.OutRefundNo, OutTradeNo: r.OutTradeNo, TransactionID: deref(r.TransactionID),
		RefundID: deref(r.RefundID), State: RefundState(r.State), Amount: r.Amount, Total: r.Total,
		Reason: r.Reason, Requester: r.Requester, Attempts: r.Attempts, LastError: r.LastError,
		NextCheckAt: utcPtr(r.NextCheckAt), SuccessTime: utcPtr(r.SuccessTime), AcceptedAt: utcPtr(r.AcceptedAt),
		Version: r.Version, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
}

// Errors CreateRefund returns besides ErrNotFound.
var (
	// ErrNotOwner means the requester did not pay the order.
	ErrNotOwner = errors.New("ledger: order was paid by someone else")
	// ErrNotRefundable means the order is not paid (state not SUCCESS).
	ErrNotRefundable = errors.New("ledger: order is not paid")
)

// RefundExceedsError reports a refund larger than what is left to refund.
type RefundExceedsError struct {
	OutTradeNo string
	Requested  int64
	Remaining  int64
}

func (e *RefundExceedsError) Error() string {
	return fmt.Sprintf("ledger: refund of %d fen exceeds the %d fen left to refund on %s", e.Requested, e.Remaining, e.OutTradeNo)
}

// RefundRequest asks for a refund of Amount fen of an order.
type RefundRequest struct {
	OutTradeNo  string
	OutRefundNo string
	Amount      int64
	Reason      string
	Requester   string // openid of the caller; must be the payer
	// CheckAt is when the janitor may first look at the refund if nothing
	// settled it by then (the safety buffer).
	CheckAt time.Time
	// IdemScope and IdemKey, when set, name the idempotency key the refund
	// is created for; the link is written in the same transaction, so a
	// takeover of a crashed request finds the refund. IdemHash is the
	// request's parameters' hash, as the key holds it.
	IdemScope, IdemKey, IdemHash string
	// Gap is how long after one refund application of an order the next
	// may be sent: WeChat Pay answers FREQUENCY_LIMITED to one sooner than
	// a minute after the last. 0: no wait.
	Gap time.Duration
}

// CreateRefund records a refund in state CREATED with one attempt counted
// (the caller sends it to WeChat Pay next), in the transaction that checks
// the money rule on the locked payment row: the order is SUCCESS, paid by
// the requester, and its refunds not CLOSED/FAILED never exceed what was
// paid. When the order's last refund application was sent, or another
// refund of it is booked to be sent, less than req.Gap before now, the
// refund is booked req.Gap after the later of the two: recorded with no
// attempt and that time as its next check. The caller must not send it,
// the janitor will (CountRefundAttempt); its amount is reserved all the
// same. Refunds of an order so go out in the order they were asked for.
// It returns ErrNotFound (unknown order), ErrNotOwner, ErrNotRefundable,
// *RefundExceedsError, ErrConflict (the idempotency key already names
// another refund) or ErrAlreadyRecorded with the stored refund when
// out_refund_no exists.
func (s *Store) CreateRefund(ctx context.Context, req RefundRequest) (*Refund, error) {
	if req.Amount <= 0 {
		return nil, fmt.Errorf("create refund %s: amount %d must be positive", req.OutRefundNo, req.Amount)
	}
	var out *Refund
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		var err error
		out, err = s.createRefund(tx, req)
		return err
	})
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		existing, rerr := s.Refund(ctx, req.OutRefundNo)
		if rerr == nil {
			return existing, fmt.Errorf("create refund %s: %w", req.OutRefundNo, ErrAlreadyRecorded)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create refund %s for %s: %w", req.OutRefundNo, req.OutTradeNo, err)
	}
	s.noteRefund(out.State)
	return out, nil
}

func (s *Store) createRefund(tx *gorm.DB, req RefundRequest) (*Refund, error) {
	pay, err := findPayment(lockForUpdate(tx), req.OutTradeNo)
	if err != nil {
		return nil, err
	}
	if _, err := findRefund(tx, req.OutRefundNo); err == nil {
		return nil, gorm.ErrDuplicatedKey // CreateRefund returns the stored one
	}
	if err := pay.refundableBy(req.Requester); err != nil {
		return nil, err
	}
	now := s.now()
	checkAt, attempts := dbTime(req.CheckAt), 1
	updates := map[string]any{"refunded_total": gorm.Expr("refunded_total + ?", req.Amount),
		"version": gorm.Expr("version + 1"), "updated_at": now, "refund_sent_at": dbTime(now)}
	if slot := pay.nextSlot(req.Gap); slot.After(now) {
		checkAt, attempts = slot, 0
		delete(updates, "refund_sent_at")
		updates["refund_slot_at"] = slot
	}
	res := tx.Model(&paymentRow{}).
		Where("id = ? AND state = ? AND refunded_total + ? <= amount_total", pay.ID, string(PaymentSuccess), req.Amount).
		Updates(updates)
	if res.Error != nil {
		return nil, fmt.Errorf("reserve refund amount: %w", res.Error)
	}
	if res.RowsAffected != 1 {
		return nil, &RefundExceedsError{OutTradeNo: req.OutTradeNo, Requested: req.Amount,
			Remaining: *pay.AmountTotal - pay.RefundedTotal}
	}
	row := refundRow{OutRefundNo: req.OutRefundNo, OutTradeNo: req.OutTradeNo, TransactionID: pay.TransactionID,
		State: string(RefundCreated), Amount: req.Amount, Total: *pay.AmountTotal, Reason: req.Reason,
		Requester: req.Requester, Attempts: attempts, NextCheckAt: &checkAt, CreatedAt: now, UpdatedAt: now}
	if err := tx.Create(&row).Error; err != nil {
		return nil, fmt.Errorf("insert refund: %w", err)
	}
	if err := s.linkIdempotency(tx, req.IdemScope, req.IdemKey, req.IdemHash, req.OutRefundNo); err != nil {
		return nil, err
	}
	t := Transition{Entity: EntityRefund, EntityKey: req.OutRefundNo, OutTradeNo: req.OutTradeNo,
		From: string(RefundNone), To: string(RefundCreated), Source: SourceAPI}
	return row.refund(), s.appendHistory(tx, t)
}

// sentGapEnds is when the order's next refund application may be sent,
// gap after its last (the zero time if none was sent).
func (pay *paymentRow) sentGapEnds(gap time.Duration) time.Time {
	return gapEnds(pay.RefundSentAt, gap)
}

// nextSlot is the earliest a new refund of the order may be sent: gap after
// its last application sent, and gap after the last refund booked.
func (pay *paymentRow) nextSlot(gap time.Duration) time.Time {
	return maxTime(gapEnds(pay.RefundSentAt, gap), gapEnds(pay.RefundSlotAt, gap))
}

// gapEnds is gap after t, rounded up to the database's microsecond, or the
// zero time for no t.
func gapEnds(t *time.Time, gap time.Duration) time.Time {
	if t == nil {
		return time.Time{}
	}
	end := t.Add(gap)
	if r := dbTime(end); r.Before(end) {
		return r.Add(time.Microsecond)
	}
	return dbTime(end)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// markRefundSent notes that one of the order's refund applications goes
// to WeChat Pay at now. Not a change of the order's state: its version
// stays.
func markRefundSent(tx *gorm.DB, paymentID uint64, now time.Time) error {
	if err := tx.Model(&paymentRow{}).Where("id = ?", paymentID).UpdateColumn("refund_sent_at", dbTime(now)).Error; err != nil {
		return fmt.Errorf("note refund application sent: %w", err)
	}
	return nil
}

// bookRefundSlot notes slot as booked for a waiting refund of the order,
// if it is later than the latest booked.
func bookRefundSlot(tx *gorm.DB, pay *paymentRow, slot time.Time) error {
	if pay.RefundSlotAt != nil && !slot.After(*pay.RefundSlotAt) {
		return nil
	}
	if err := tx.Model(&paymentRow{}).Where("id = ?", pay.ID).UpdateColumn("refund_slot_at", slot).Error; err != nil {
		return fmt.Errorf("book refund application: %w", err)
	}
	return nil
}

// refundableBy returns ErrNotOwner or ErrNotRefundable unless requester
// paid the order.
func (pay *paymentRow) refundableBy(requester string) error {
	switch {
	case deref(pay.PayerOpenID) == "" || deref(pay.PayerOpenID) != requester:
		return ErrNotOwner
	case PaymentState(pay.State) != PaymentSuccess || pay.AmountTotal == nil:
		return ErrNotRefundable
	}
	return nil
}

// CheckRefund answers, without locking or writing anything, whether
// CreateRefund would accept a refund of amount by requester now; it
// returns the errors CreateRefund would, and whether the refund would wait
// for the order's gap (not be sent at once). It only spares a doomed
// request the work before CreateRefund, whose locked check alone decides.
func (s *Store) CheckRefund(ctx context.Context, outTradeNo, requester string, amount int64, gap time.Duration) (waits bool, err error) {
	pay, err := findPayment(s.db.WithContext(ctx), outTradeNo)
	if err == nil {
		err = pay.refundableBy(requester)
	}
	if err == nil && pay.RefundedTotal+amount > *pay.AmountTotal {
		err = &RefundExceedsError{OutTradeNo: outTradeNo, Requested: amount, Remaining: *pay.AmountTotal - pay.RefundedTotal}
	}
	if err != nil {
		return false, fmt.Errorf("check refund of %s: %w", outTradeNo, err)
	}
	return pay.nextSlot(gap).After(s.now()), nil
}

// Refund returns a refund by out_refund_no, or ErrNotFound.
func (s *Store) Refund(ctx context.Context, outRefundNo string) (*Refund, error) {
	row, err := findRefund(s.db.WithContext(ctx), outRefundNo)
	if err != nil {
		return nil, fmt.Errorf("read refund %s: %w", outRefundNo, err)
	}
	return row.refund(), nil
}

// Refunds lists the refunds of an order, oldest first.
func (s *Store) Refunds(ctx context.Context, outTradeNo string) ([]Refund, error) {
	var rows []refundRow
	if err := s.db.WithContext(ctx).Where("out_trade_no = ?", outTradeNo).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read refunds of %s: %w", outTradeNo, err)
	}
	out := make([]Refund, len(rows))
	for i := range rows {
		out[i] = *rows[i].refund()
	}
	return out, nil
}

func findRefund(tx *gorm.DB, outRefundNo string) (*refundRow, error) {
	var row refundRow
	err := tx.Where("out_refund_no = ?", outRefundNo).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &row, nil
}
