package ledger

import (
	"context"

	"gorm.io/gorm"
)

// RefundSucceeded runs the refund-success effects in a transaction of
// their own, so tests reach them before the refunds state machine exists.
func (s *Store) RefundSucceeded(ctx context.Context, outRefundNo, outTradeNo string, amount int64) error {
	return s.inTx(ctx, func(tx *gorm.DB) error { return s.refundSucceeded(tx, outRefundNo, outTradeNo, amount) })
}
