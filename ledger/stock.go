package ledger

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"paygateway/retry"
)

// RefundedInFull reports whether the refunds of an order that succeeded
// cover all that was paid for it: its stock, never confirmed yet, must
// then not be confirmed (the goods would ship with the money back).
// Refunds still under way do not count: they may yet fail.
func (s *Store) RefundedInFull(ctx context.Context, outTradeNo string) (bool, error) {
	var n int64
	err := s.db.WithContext(ctx).Raw(`SELECT COUNT(*) FROM payments p WHERE p.out_trade_no = ? AND p.state = ?
		AND p.amount_total > 0 AND p.amount_total <= (SELECT COALESCE(SUM(r.amount), 0) FROM refunds r
		WHERE r.out_trade_no = p.out_trade_no AND r.state = ?)`,
		outTradeNo, PaymentSuccess, RefundSuccess).Scan(&n).Error
	if err != nil {
		return false, fmt.Errorf("read refunds of %s: %w", outTradeNo, err)
	}
	return n > 0, nil
}

// ConfirmationSkipped reports whether the order's stock confirmation
// finished without being sent (see RefundedInFull): nothing was confirmed,
// so none of its refunds may release stock. Only the attempt that settled
// the job counts (its number is the job's attempts): a worker whose lease
// ran out stores its attempt too, but not its outcome, and another worker
// may have sent the confirmation meanwhile.
func (s *Store) ConfirmationSkipped(ctx context.Context, outTradeNo string) (bool, error) {
	var n int64
	err := s.db.WithContext(ctx).Raw(`SELECT COUNT(*) FROM outbox_jobs c JOIN outbox_attempts a ON a.job_id = c.id
		AND a.attempt = c.attempts WHERE c.out_trade_no = ? AND c.kind = ? AND c.state = ? AND a.outcome = ?`,
		outTradeNo, JobConfirmInventory, JobDone, string(retry.OutcomeSkipped)).Scan(&n).Error
	if err != nil {
		return false, fmt.Errorf("read the stock confirmation of %s: %w", outTradeNo, err)
	}
	return n > 0, nil
}

// RefundedOutside reports whether WeChat Pay said, since a person last
// replayed job jobID (the order's confirmation), that money of the order
// went back by no refund of the gateway (REFUNDED_OUTSIDE: flagged only
// for a refund of the transaction the ledger holds paid, never a
// duplicate payment's). The confirmation is then held for a person, as
// when that was known before it was first sent; a replay after the last
// such word sends it.
func (s *Store) RefundedOutside(ctx context.Context, outTradeNo string, jobID uint64) (bool, error) {
	return refundedOutside(s.db.WithContext(ctx), outTradeNo, jobID)
}

func refundedOutside(tx *gorm.DB, outTradeNo string, jobID uint64) (bool, error) {
	var n int64
	err := tx.Raw(`SELECT COUNT(*) FROM anomalies a WHERE a.out_trade_no = ? AND a.kind = ?
		AND NOT EXISTS (SELECT 1 FROM outbox_attempts r WHERE r.job_id = ? AND r.outcome = ? AND r.finished_at >= a.last_seen)`,
		outTradeNo, AnomalyRefundedOutside, jobID, string(retry.OutcomeReplayed)).Scan(&n).Error
	if err != nil {
		return false, fmt.Errorf("read refunds of %s outside the gateway: %w", outTradeNo, err)
	}
	return n > 0, nil
}

// markHeldOutside: a confirmation that died for another reason (an
// inventory refusal, max_elapsed in an outage) after WeChat Pay reported
// its order refunded outside the gateway says so first, so that a person
// replaying it decides knowing it (a replay sends it).
func (s *Store) markHeldOutside(tx *gorm.DB, a retry.Attempt) error {
	var job outboxJobRow
	if err := tx.Where("id = ?", a.JobID).Take(&job).Error; err != nil {
		return fmt.Errorf("read dead job %d: %w", a.JobID, err)
	}
	if job.Kind != JobConfirmInventory || strings.HasPrefix(a.Err, "held:") {
		return nil
	}
	outside, err := refundedOutside(tx, job.OutTradeNo, job.ID)
	if err != nil || !outside {
		return err
	}
	return markHeld(tx, job, a.Err)
}

// markHeld makes a dead confirmation's last error say that it is held for
// a refund outside the gateway, keeping why it died. One an attempt may
// have sent may have taken effect: it says so, for a person whose order
// does not ship must then replay it too (the replay asks the inventory
// first), or the releases held behind it never give the stock back.
func markHeld(tx *gorm.DB, job outboxJobRow, lastErr string) error {
	held := heldRefundedOutside
	if job.maybeSent() {
		held = heldRefundedOutsideAttempted
	}
	err := tx.Model(&outboxJobRow{}).Where("id = ?", job.ID).Updates(map[string]any{
		"last_error": truncate(held+" (last error: "+lastErr+")", lastErrorLen), "updated_at": tx.NowFunc()}).Error
	if err != nil {
		return fmt.Errorf("mark dead job %d held: %w", job.ID, err)
	}
	return nil
}

// maybeSent reports whether an attempt of a job not running may have
// reached the inventory: one not stored as unsent (a worker that died
// stores nothing, and counts).
func (r outboxJobRow) maybeSent() bool { return r.Attempts > r.UnsentAttempts }

// heldRefundedOutsideAttempted is heldRefundedOutside for a confirmation
// an earlier attempt may have put into effect.
const heldRefundedOutsideAttempted = "held: WeChat Pay reports the order refunded outside the gateway (anomaly " +
	"REFUNDED_OUTSIDE); an earlier attempt may have confirmed the stock. Replay this job if the order ships, or if " +
	"the inventory has the confirmation (the replay asks it first, and then the releases held behind it run)"

// lastErrorLen is the size of outbox_jobs.last_error.
const lastErrorLen = 512
