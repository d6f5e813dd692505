package ledger

import (
	"fmt"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// confirmPayload and releasePayload are the bodies of the inventory calls
// (see gateway/inventory: Confirmation and Release).
type confirmPayload struct {
	Key         string `json:"key"`
	OutTradeNo  string `json:"out_trade_no"`
	AmountTotal int64  `json:"amount_total"`
}

type releasePayload struct {
	Key         string `json:"key"`
	OutRefundNo string `json:"out_refund_no"`
	OutTradeNo  string `json:"out_trade_no"`
	Amount      int64  `json:"amount"`
}

// paymentSucceeded runs, inside the transaction that moved a payment to
// SUCCESS, the effects that must commit or roll back with that change:
// the job that confirms the order's stock downstream. With a hold reason
// (an order WeChat Pay already reports refunded, see refundedOutside, or
// one paid another amount than registered, see amountFlag) the job is
// stored dead, held for a person, the reason its last error: confirming
// stock may ship goods whose money went back, or that were not paid for
// as ordered. Replaying it confirms the stock.
func (s *Store) paymentSucceeded(tx *gorm.DB, p *Payment, hold string) error {
	row, err := s.confirmJob(p)
	if err != nil {
		return err
	}
	if hold != "" {
		row.State, row.LastError = JobDead, truncate(hold, lastErrorLen)
	}
	return s.createJob(tx, row)
}

// createJob enqueues one job (none if its key is taken). One created dead,
// held for a person, gets its history row at once, as every other way
// into DEAD writes one: the dead letters show why from the start.
func (s *Store) createJob(tx *gorm.DB, row outboxJobRow) error {
	res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&row)
	if res.Error != nil {
		return fmt.Errorf("enqueue %s job %s: %w", row.Kind, row.JobKey, res.Error)
	}
	if res.RowsAffected != 1 || row.State != JobDead {
		return nil
	}
	if err := heldRow(tx, row.ID, row.Attempts, row.LastError, s.now()); err != nil {
		return fmt.Errorf("history of held job %s: %w", row.JobKey, err)
	}
	return nil
}

// heldRefundedOutside is the last error of a confirmation held because
// the order was refunded outside the gateway. heldOutside tells it by its
// start, which the other messages of that case share.
const heldRefundedOutside = heldOutsidePrefix + " (anomaly REFUNDED_OUTSIDE); " +
	"replay this job to confirm the stock if the order ships"

// heldOutsidePrefix starts every last error of a confirmation held for a
// refund outside the gateway, the inventory jobs' included.
const heldOutsidePrefix = "held: WeChat Pay reports the order refunded outside the gateway"

// heldOutside reports a last error that holds a confirmation for a refund
// outside the gateway (not, say, for an amount that differs).
func heldOutside(lastError string) bool { return strings.HasPrefix(lastError, heldOutsidePrefix) }

// heldAmount is the last error of a confirmation held because its
// registered order was paid another amount. A full refund makes the
// confirmation's replay skip it (see RefundedInFull), releases and all.
func heldAmount(expected, paid int64) string {
	return fmt.Sprintf("held: the order was registered for %d fen and paid %d fen (anomaly AMOUNT_MISMATCH); "+
		"replay this job to confirm the stock if the order ships, or refund the order and then replay it "+
		"(an order refunded in full is not confirmed)", expected, paid)
}

// heldFor joins the reasons a confirmation is held for, the first one
// leading (heldOutside reads the start).
func heldFor(first, also string) string {
	if also == "" {
		return first
	}
	return first + "; also " + strings.TrimPrefix(also, "held: ")
}

// confirmJob is the job that confirms a paid order's stock downstream.
func (s *Store) confirmJob(p *Payment) (outboxJobRow, error) {
	key := "confirm:" + p.OutTradeNo
	return s.jobRow(JobConfirmInventory, key, p.OutTradeNo, "",
		confirmPayload{Key: key, OutTradeNo: p.OutTradeNo, AmountTotal: p.AmountTotal})
}

// refundSucceeded runs inside the transaction that moved a refund to
// SUCCESS: the job that releases the refunded stock downstream.
// If the order's confirmation is dead the release is stored dead, held
// by it (see holdReleases).
func (s *Store) refundSucceeded(tx *gorm.DB, outRefundNo, outTradeNo string, amount int64) error {
	key := "release:" + outRefundNo
	row, err := s.jobRow(JobReleaseInventory, key, outTradeNo, outRefundNo,
		releasePayload{Key: key, OutRefundNo: outRefundNo, OutTradeNo: outTradeNo, Amount: amount})
	if err != nil {
		return err
	}
	dead, err := deadConfirmation(tx, outTradeNo)
	if err != nil {
		return err
	}
	if dead != 0 {
		row.State, row.LastError = JobDead, heldBy(dead)
	}
	return s.createJob(tx, row)
}
