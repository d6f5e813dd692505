package ledger

import (
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"paygateway/retry"
)

// A release waits for its order's confirmation (releaseAfterConfirm). When
// the confirmation dies, its waiting releases would wait for ever, out of
// sight of the dead-letter list; instead they die with it ("held": never
// attempted), a release created later is stored dead at once, and
// replaying the confirmation puts them back in the queue behind it. A held
// release cannot be replayed on its own while its confirmation is not
// DONE: stock is never released before it was confirmed.

// heldBy is the last error of a release held by a dead confirmation.
func heldBy(confirmID uint64) string {
	return fmt.Sprintf("held: confirmation job %d is dead; replay it first", confirmID)
}

// holdReleases runs in the transaction that made job id DEAD: if it is a
// confirmation, its order's pending releases become DEAD too, each with a
// history row.
func (s *Store) holdReleases(tx *gorm.DB, id uint64) error {
	var job outboxJobRow
	if err := tx.Where("id = ?", id).Take(&job).Error; err != nil {
		return fmt.Errorf("read dead job %d: %w", id, err)
	}
	if job.Kind != JobConfirmInventory {
		return nil
	}
	var held []outboxJobRow
	if err := lockForUpdate(tx).Where("out_trade_no = ? AND kind = ? AND state = ?", job.OutTradeNo,
		JobReleaseInventory, JobPending).Find(&held).Error; err != nil {
		return fmt.Errorf("read releases of %s: %w", job.OutTradeNo, err)
	}
	now := s.now()
	for _, r := range held {
		err := tx.Model(&outboxJobRow{}).Where("id = ?", r.ID).
			Updates(map[string]any{"state": JobDead, "last_error": heldBy(id), "updated_at": now}).Error
		if err == nil {
			err = heldRow(tx, r.ID, r.Attempts, heldBy(id), now)
		}
		if err != nil {
			return fmt.Errorf("hold release job %d: %w", r.ID, err)
		}
	}
	return nil
}

// heldRow appends the history row of a job held for a person (made DEAD
// by the ledger, not by a worker's attempt), why its error.
func heldRow(tx *gorm.DB, jobID uint64, attempts int, why string, now time.Time) error {
	return tx.Create(&outboxAttemptRow{JobID: jobID, Attempt: attempts, Worker: "outbox",
		Outcome: string(retry.OutcomeDead), Error: why, StartedAt: now, FinishedAt: now}).Error
}

// deadConfirmation returns the id of the order's confirmation if it is
// DEAD, or 0. It locks the confirmation's row: a confirmation dying at the
// same time either commits first (and is seen DEAD here) or waits for this
// transaction (and then finds the new release PENDING and holds it).
func deadConfirmation(tx *gorm.DB, outTradeNo string) (uint64, error) {
	var c outboxJobRow
	err := lockForUpdate(tx).Where("out_trade_no = ? AND kind = ?", outTradeNo, JobConfirmInventory).Take(&c).Error
	if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && c.State != JobDead) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read confirmation of %s: %w", outTradeNo, err)
	}
	return c.ID, nil
}

// releaseReplayable refuses (ErrConflict) to replay a release while its
// order's confirmation is not DONE.
func (s *Store) releaseReplayable(tx *gorm.DB, row outboxJobRow) error {
	if row.Kind != JobReleaseInventory {
		return nil
	}
	var open int64
	err := tx.Model(&outboxJobRow{}).Where("out_trade_no = ? AND kind = ? AND state <> ?", row.OutTradeNo,
		JobConfirmInventory, JobDone).Count(&open).Error
	if err != nil {
		return fmt.Errorf("read confirmation of %s: %w", row.OutTradeNo, err)
	}
	if open > 0 {
		return fmt.Errorf("release job %d waits for the confirmation of %s, replay that first: %w", row.ID, row.OutTradeNo, ErrReleaseWaits)
	}
	return nil
}

// reviveReleases runs when a confirmation is replayed: the releases it
// held (DEAD, never attempted) go back to PENDING behind it.
func (s *Store) reviveReleases(tx *gorm.DB, confirm outboxJobRow, by string, now time.Time) error {
	if confirm.Kind != JobConfirmInventory {
		return nil
	}
	var held []outboxJobRow
	if err := tx.Where("out_trade_no = ? AND kind = ? AND state = ? AND last_error = ?", confirm.OutTradeNo,
		JobReleaseInventory, JobDead, heldBy(confirm.ID)).Find(&held).Error; err != nil {
		return fmt.Errorf("read held releases of %s: %w", confirm.OutTradeNo, err)
	}
	for _, r := range held {
		if err := replayRow(tx, r, by, now); err != nil {
			return err
		}
	}
	return nil
}

// maxWorkerLen bounds who a history row names (outbox_attempts.worker,
// migration 0055): a worker id (at most 64, see retry) or whoever replayed
// the job, "<role>:<key name>" with a key name of up to 64.
const maxWorkerLen = 80

// replayRow puts a dead job back in the queue, due now, with a history row.
func replayRow(tx *gorm.DB, row outboxJobRow, by string, now time.Time) error {
	err := tx.Model(&outboxJobRow{}).Where("id = ?", row.ID).
		Updates(map[string]any{"state": JobPending, "next_run_at": now, "first_attempt_at": nil, "updated_at": now}).Error
	if err == nil {
		err = tx.Create(&outboxAttemptRow{JobID: row.ID, Attempt: row.Attempts, Worker: truncate(by, maxWorkerLen),
			Outcome: string(retry.OutcomeReplayed), StartedAt: now, FinishedAt: now}).Error
	}
	if err != nil {
		return fmt.Errorf("replay outbox job %d: %w", row.ID, err)
	}
	return nil
}
