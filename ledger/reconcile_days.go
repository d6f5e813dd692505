package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// HasSettlements reports whether the ledger has, on a business day, a
// SUCCESS payment (by success_time) or a SUCCESS refund (by the day
// WeChat accepted it, see eachRefundedOn):
// the rows a reconciliation of that day expects to find in the bill.
// WeChat Pay answers NO_STATEMENT_EXIST both for a day without
// transactions and for a bill not generated yet; only this check tells
// them apart.
func (s *Store) HasSettlements(ctx context.Context, day string) (bool, error) {
	start, err := DayStart(day)
	if err != nil {
		return false, err
	}
	end := start.Add(24 * time.Hour)
	db := s.db.WithContext(ctx)
	var ids []uint64
	err = db.Model(&paymentRow{}).Where("state = ? AND success_time >= ? AND success_time < ?",
		PaymentSuccess, start, end).Limit(1).Pluck("id", &ids).Error
	if err != nil {
		return false, fmt.Errorf("look for payments on %s: %w", day, err)
	}
	if len(ids) > 0 {
		return true, nil
	}
	found := errors.New("found")
	err = eachRefundedOn(ctx, s.db, start, func(RefundListItem) error { return found })
	if err != nil && !errors.Is(err, found) {
		return false, fmt.Errorf("look for refunds on %s: %w", day, err)
	}
	return err != nil, nil
}

// ReconciledDays returns the business days from first to last
// ("YYYY-MM-DD", inclusive) that have a stored report. A day only claimed
// (PENDING: its first run failed or still runs) is not among them, nor a
// NO_BILL day from recheckFrom on (its bill may not be out yet), nor an
// UNREADABLE day whose report is UnreadableRecheck old.
func (s *Store) ReconciledDays(ctx context.Context, first, last, recheckFrom string) (map[string]bool, error) {
	var days []string
	err := s.db.WithContext(ctx).Model(&reconciliationRow{}).
		Where("bill_date >= ? AND bill_date <= ? AND status <> ?", first, last, ReconcilePending).
		Where("status <> ? OR bill_date < ?", ReconcileNoBill, recheckFrom).
		Where("status <> ? OR updated_at > ?", ReconcileUnreadable, dbTime(s.now().Add(-UnreadableRecheck))).
		Pluck("bill_date", &days).Error
	if err != nil {
		return nil, fmt.Errorf("read reconciled days %s..%s: %w", first, last, err)
	}
	out := make(map[string]bool, len(days))
	for _, d := range days {
		out[d] = true
	}
	return out, nil
}

// FirstPaymentDay returns the business day the ledger's first payment was
// created, or "" for a ledger without payments.
func (s *Store) FirstPaymentDay(ctx context.Context) (string, error) {
	first, ok, err := s.FirstPaymentTime(ctx)
	if err != nil || !ok {
		return "", err
	}
	return DayOf(first), nil
}

// FirstPaymentTime returns when the ledger's first payment (or registered
// order) was created; false for a ledger without payments.
func (s *Store) FirstPaymentTime(ctx context.Context) (time.Time, bool, error) {
	var rows []paymentRow
	err := s.db.WithContext(ctx).Select("id", "created_at").Order("id").Limit(1).Find(&rows).Error
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the first payment: %w", err)
	}
	if len(rows) == 0 {
		return time.Time{}, false, nil
	}
	return rows[0].CreatedAt, true, nil
}

// RefundsWithoutAcceptance returns up to limit SUCCESS refunds the ledger
// recorded on day whose acceptance time WeChat Pay never stated (a refund
// settled by notification before any answer of WeChat's named it): their
// bill day is not known until someone asks.
func (s *Store) RefundsWithoutAcceptance(ctx context.Context, day string, limit int) ([]string, error) {
	start, err := DayStart(day)
	if err != nil {
		return nil, err
	}
	var nos []string
	err = s.db.WithContext(ctx).Model(&refundRow{}).
		Where("state = ? AND accepted_at IS NULL AND created_at >= ? AND created_at < ?", RefundSuccess, start, start.Add(24*time.Hour)).
		// Latest first: a refund recorded near midnight is the one WeChat
		// may have accepted the next day; one from the morning was not.
		Order("id DESC").Limit(limit).Pluck("out_refund_no", &nos).Error
	if err != nil {
		return nil, fmt.Errorf("refunds of %s without an acceptance time: %w", day, err)
	}
	return nos, nil
}

// NoteRefundAccepted stores when WeChat Pay accepted a refund, unless the
// ledger has that already (the first time stated is kept).
func (s *Store) NoteRefundAccepted(ctx context.Context, outRefundNo string, at time.Time) error {
	return markAccepted(s.db.WithContext(ctx), outRefundNo, at)
}

// markAccepted sets a refund's accepted_at unless it has one.
func markAccepted(db *gorm.DB, outRefundNo string, at time.Time) error {
	err := db.Model(&refundRow{}).Where("out_refund_no = ? AND accepted_at IS NULL", outRefundNo).
		UpdateColumn("accepted_at", dbTime(at)).Error
	if err != nil {
		return fmt.Errorf("note acceptance of refund %s: %w", outRefundNo, err)
	}
	return nil
}
