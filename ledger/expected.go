package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// ErrExpireAtPassed means a registration would register an order whose
// expire_at is not after the ledger's now (see RegisterOrderBeforeExpiry).
var ErrExpireAtPassed = errors.New("ledger: expire_at has passed")

// RegisterOrderBeforeExpiry is RegisterOrder for the orders API. An order
// it would register (a new one, or the first registration of a payment a
// callback recorded) must expire after now, or it returns
// ErrExpireAtPassed and writes nothing. A retry of an order already
// registered is answered as RegisterOrder answers it, whatever its
// expire_at (the stored order with ErrAlreadyRecorded for the same amount
// and payer, ErrConflict for others): the first expire_at stands, and a
// queued retry may arrive after it.
func (s *Store) RegisterOrderBeforeExpiry(ctx context.Context, o Order) (*Payment, error) {
	if o.ExpireAt.After(s.now()) {
		return s.RegisterOrder(ctx, o)
	}
	// No path unregisters or deletes an order, so once registered here
	// it is registered in RegisterOrder, which then only answers.
	row, err := findPayment(s.db.WithContext(ctx), o.OutTradeNo)
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && !row.Registered:
		return nil, fmt.Errorf("register order %s: %w", o.OutTradeNo, ErrExpireAtPassed)
	case err != nil:
		return nil, fmt.Errorf("register order %s: %w", o.OutTradeNo, err)
	}
	return s.RegisterOrder(ctx, o)
}

// AwaitingPayment lists registered orders still EXPECTED whose check is
// due: never checked and created at or before createdBefore, or
// scheduled by ScheduleCheck for now or earlier; at most limit, longest
// due first (the (state, next_check_at) index serves it). The
// lost-callback compensation schedules every order it checks, so the
// next call lists the next ones.
func (s *Store) AwaitingPayment(ctx context.Context, createdBefore time.Time, limit int) ([]Payment, error) {
	var rows []paymentRow
	err := s.db.WithContext(ctx).
		Where("state = ? AND registered = ? AND ((next_check_at IS NULL AND created_at <= ?) OR next_check_at <= ?)",
			string(PaymentExpected), true, createdBefore.UTC(), s.now()).
		Order("next_check_at").Order("id").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list orders awaiting payment: %w", err)
	}
	out := make([]Payment, len(rows))
	for i := range rows {
		out[i] = *rows[i].payment()
	}
	return out, nil
}

// ScheduleCheck sets when the compensation asks about an order still
// EXPECTED again (an order that moved on is left alone). It is not a
// state change: no history row.
func (s *Store) ScheduleCheck(ctx context.Context, outTradeNo string, at time.Time) error {
	err := s.db.WithContext(ctx).Model(&paymentRow{}).
		Where("out_trade_no = ? AND state = ?", outTradeNo, string(PaymentExpected)).
		UpdateColumn("next_check_at", dbTime(at)).Error // not updated_at: nothing about the order changed
	if err != nil {
		return fmt.Errorf("schedule check of %s: %w", outTradeNo, err)
	}
	return nil
}

// ClaimCheck schedules the order's next check at `at` only if its check
// is still due as AwaitingPayment(createdBefore) saw it, and says whether
// it did. Of several instances that listed the same order, one claims it
// and asks WeChat Pay; the others see it scheduled and leave it, so an
// order costs one query per check, not one per instance.
func (s *Store) ClaimCheck(ctx context.Context, outTradeNo string, createdBefore, at time.Time) (bool, error) {
	res := s.db.WithContext(ctx).Model(&paymentRow{}).
		Where("out_trade_no = ? AND state = ? AND ((next_check_at IS NULL AND created_at <= ?) OR next_check_at <= ?)",
			outTradeNo, string(PaymentExpected), createdBefore.UTC(), s.now()).
		UpdateColumn("next_check_at", dbTime(at))
	if res.Error != nil {
		return false, fmt.Errorf("claim check of %s: %w", outTradeNo, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// ReleaseCheck makes the check of an order still awaiting payment due at
// once, when it is scheduled later: the claim of a check that shutdown cut
// short is handed back, so another instance asks about the order now, not
// after the interval the claim set.
func (s *Store) ReleaseCheck(ctx context.Context, outTradeNo string) error {
	now := s.now().UTC()
	err := s.db.WithContext(ctx).Model(&paymentRow{}).
		Where("out_trade_no = ? AND state = ? AND next_check_at > ?", outTradeNo, string(PaymentExpected), now).
		UpdateColumn("next_check_at", now).Error
	if err != nil {
		return fmt.Errorf("release check of %s: %w", outTradeNo, err)
	}
	return nil
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
