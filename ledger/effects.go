package ledger

import "gorm.io/gorm"

// paymentSucceeded runs, inside the transaction that moved a payment to
// SUCCESS, the effects that must commit or roll back with that change.
func (s *Store) paymentSucceeded(tx *gorm.DB, p *Payment) error {
	return nil
}

// refundSucceeded runs, inside the transaction that moved a refund to
// SUCCESS, the effects that must commit or roll back with that change.
func (s *Store) refundSucceeded(tx *gorm.DB, outRefundNo, outTradeNo string, amount int64) error {
	return nil
}
