package ledger

import (
	"context"
	"fmt"
	"time"
)

// HasSettlements reports whether the ledger has, on a business day, a
// SUCCESS payment (by success_time) or a SUCCESS refund (by created_at):
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
	err = db.Model(&refundRow{}).Where("state = ? AND created_at >= ? AND created_at < ?",
		RefundSuccess, start, end).Limit(1).Pluck("id", &ids).Error
	if err != nil {
		return false, fmt.Errorf("look for refunds on %s: %w", day, err)
	}
	return len(ids) > 0, nil
}
