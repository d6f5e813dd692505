package ledger

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// AwaitingPayment lists registered orders still EXPECTED that were
// created at or before createdBefore, in id order after afterID, at most
// limit. The lost-callback compensation pages through them.
func (s *Store) AwaitingPayment(ctx context.Context, createdBefore time.Time, afterID uint64, limit int) ([]Payment, uint64, error) {
	var rows []paymentRow
	err := s.db.WithContext(ctx).
		Where("state = ? AND registered = ? AND created_at <= ? AND id > ?", string(PaymentExpected), true, createdBefore.UTC(), afterID).
		Order("id").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, afterID, fmt.Errorf("list orders awaiting payment: %w", err)
	}
	out := make([]Payment, len(rows))
	for i := range rows {
		out[i] = *rows[i].payment()
		afterID = rows[i].ID
	}
	return out, afterID, nil
}

// CloseExpired moves an EXPECTED order whose expire_at has passed to
// CLOSED, with a history row naming source and ref. It returns ErrNoChange
// when the order is no longer EXPECTED or not yet expired, ErrNotFound
// when there is no such order.
func (s *Store) CloseExpired(ctx context.Context, outTradeNo, source, ref string) (*Payment, error) {
	var out *Payment
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		row, err := findPayment(lockForUpdate(tx), outTradeNo)
		if err != nil {
			return err
		}
		now := s.now()
		if PaymentState(row.State) != PaymentExpected || row.ExpireAt == nil || row.ExpireAt.After(now) {
			out = row.payment()
			return ErrNoChange
		}
		if err := paymentMachine.check(EntityPayment, outTradeNo, row.State, string(PaymentClosed)); err != nil {
			return err
		}
		from := row.State
		row.State = string(PaymentClosed)
		if err := s.savePayment(tx, row); err != nil {
			return err
		}
		out = row.payment()
		return s.appendHistory(tx, Transition{Entity: EntityPayment, EntityKey: outTradeNo, OutTradeNo: outTradeNo,
			From: from, To: row.State, Source: source, Ref: ref})
	})
	if err != nil {
		return out, fmt.Errorf("close expired order %s: %w", outTradeNo, err)
	}
	return out, nil
}
