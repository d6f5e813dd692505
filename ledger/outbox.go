package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"paygateway/retry"
)

// Outbox job kinds: the inventory calls owed after a ledger change.
const (
	JobConfirmInventory = "inventory.confirm"
	JobReleaseInventory = "inventory.release"
)

// JobKinds lists the outbox job kinds.
var JobKinds = []string{JobConfirmInventory, JobReleaseInventory}

// Outbox job states.
const (
	JobPending = "PENDING"
	JobRunning = "RUNNING"
	JobDone    = "DONE"
	JobDead    = "DEAD"
)

// OutboxJob is a stored job with, when listed for operators, its attempts.
type OutboxJob struct {
	ID          uint64          `json:"id"`
	Kind        string          `json:"kind"`
	Key         string          `json:"key"`
	OutTradeNo  string          `json:"out_trade_no"`
	OutRefundNo string          `json:"out_refund_no,omitempty"`
	Payload     json.RawMessage `json:"payload"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempts"`
	// MaybeSent: an attempt may have reached the other side (one not
	// stored as unsent, or one running now); a replay then asks it first.
	MaybeSent      bool       `json:"maybe_sent"`
	LastError      string     `json:"last_error,omitempty"`
	NextRunAt      time.Time  `json:"next_run_at"`
	FirstAttemptAt *time.Time `json:"first_attempt_at,omitempty"`
	DoneAt         *time.Time `json:"done_at,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	// Version changes with every change to the job's row (its state,
	// schedule, attempts or last error; a dead job held again for a newer
	// reason): it is its updated_at to the microsecond. A person replays a
	// dead job on the version they looked at (ReplayIf), not on whatever
	// it has become since. (A worker whose lease ran out may still add its
	// attempt to the history without a new version: a replay asks first.)
	Version string          `json:"version"`
	History []retry.Attempt `json:"history,omitempty"`
}

type outboxJobRow struct {
	ID             uint64 `gorm:"primaryKey"`
	Kind           string
	JobKey         string
	OutTradeNo     string
	OutRefundNo    *string
	Payload        string
	State          string
	Attempts       int
	UnsentAttempts int // attempts stored as retry.Attempt.Unsent
	LastError      string
	NextRunAt      time.Time
	LeaseOwner     *string
	LeaseUntil     *time.Time
	FirstAttemptAt *time.Time
	DoneAt         *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

func (outboxJobRow) TableName() string { return "outbox_jobs" }

func (r outboxJobRow) job() OutboxJob {
	return OutboxJob{ID: r.ID, Kind: r.Kind, Key: r.JobKey, OutTradeNo: r.OutTradeNo, OutRefundNo: deref(r.OutRefundNo),
		Payload: json.RawMessage(r.Payload), State: r.State, Attempts: r.Attempts, MaybeSent: r.maybeSent(),
		LastError: r.LastError, NextRunAt: r.NextRunAt.UTC(), FirstAttemptAt: utcPtr(r.FirstAttemptAt), DoneAt: utcPtr(r.DoneAt),
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), Version: jobVersion(r.UpdatedAt)}
}

func jobVersion(updatedAt time.Time) string { return strconv.FormatInt(updatedAt.UnixMicro(), 10) }

func (r outboxJobRow) claimed() retry.Job {
	j := retry.Job{ID: r.ID, Kind: r.Kind, Key: r.JobKey, OutTradeNo: r.OutTradeNo, Payload: []byte(r.Payload),
		Attempt: r.Attempts, MaybeSent: r.Attempts-1 > r.UnsentAttempts, CreatedAt: r.CreatedAt.UTC()}
	if r.FirstAttemptAt != nil {
		j.FirstAttemptAt = r.FirstAttemptAt.UTC()
	}
	if r.LeaseUntil != nil {
		j.LeaseUntil = r.LeaseUntil.UTC()
	}
	return j
}

type outboxAttemptRow struct {
	ID         uint64 `gorm:"primaryKey"`
	JobID      uint64
	Attempt    int
	Worker     string
	Outcome    string
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
	NextRunAt  *time.Time
	Unsent     bool
}

func (outboxAttemptRow) TableName() string { return "outbox_attempts" }

func (r outboxAttemptRow) attempt() retry.Attempt {
	a := retry.Attempt{JobID: r.JobID, Number: r.Attempt, Worker: r.Worker, Outcome: retry.Outcome(r.Outcome),
		Err: r.Error, StartedAt: r.StartedAt.UTC(), FinishedAt: r.FinishedAt.UTC(), Unsent: r.Unsent}
	if r.NextRunAt != nil {
		a.NextRunAt = r.NextRunAt.UTC()
	}
	return a
}

// jobRow builds a pending job, due now.
func (s *Store) jobRow(kind, key, outTradeNo, outRefundNo string, payload any) (outboxJobRow, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return outboxJobRow{}, fmt.Errorf("encode %s job %s: %w", kind, key, err)
	}
	now := s.now()
	return outboxJobRow{Kind: kind, JobKey: key, OutTradeNo: outTradeNo, OutRefundNo: nonEmpty(outRefundNo),
		Payload: string(body), State: JobPending, NextRunAt: now, CreatedAt: now, UpdatedAt: now}, nil
}

// createJobs inserts jobs in one statement; a job whose key is stored
// already is skipped.
func createJobs(tx *gorm.DB, rows []outboxJobRow) error {
	if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&rows).Error; err != nil {
		return fmt.Errorf("enqueue %s job %s: %w", rows[0].Kind, rows[0].JobKey, err)
	}
	return nil
}

// Outbox is the job queue the ledger fills; it implements retry.Queue.
type Outbox struct{ s *Store }

var _ retry.Queue = (*Outbox)(nil)

// Outbox returns the store's job queue.
func (s *Store) Outbox() *Outbox { return &Outbox{s: s} }

// Claim implements retry.Queue. On MySQL the due rows are locked with
// SKIP LOCKED, so concurrent claimers take disjoint jobs without waiting;
// on SQLite the single writer serialises claims. A claimed job's
// next_run_at moves to its lease end, so running jobs whose lease expired
// are due like pending ones.
func (o *Outbox) Claim(ctx context.Context, worker string, n int, lease time.Duration) ([]retry.Job, error) {
	var rows []outboxJobRow
	err := o.s.inTx(ctx, func(tx *gorm.DB) error {
		rows = nil
		now := o.s.now()
		ids, err := dueJobs(tx, now, n)
		if err != nil || len(ids) == 0 {
			return err
		}
		until := now.Add(lease)
		err = tx.Model(&outboxJobRow{}).Where("id IN ?", ids).Updates(map[string]any{
			"state": JobRunning, "lease_owner": worker, "lease_until": until, "next_run_at": until,
			"attempts": gorm.Expr("attempts + 1"), "first_attempt_at": gorm.Expr("COALESCE(first_attempt_at, ?)", now),
			"updated_at": now,
		}).Error
		if err != nil {
			return err
		}
		return tx.Where("id IN ?", ids).Order("id").Find(&rows).Error
	})
	if err != nil {
		return nil, fmt.Errorf("claim outbox jobs for %s: %w", worker, err)
	}
	out := make([]retry.Job, len(rows))
	for i, r := range rows {
		out[i] = r.claimed()
	}
	return out, nil
}

// dueJobs locks up to n due jobs: running ones whose lease expired (a
// crashed worker's) take up to a quarter of the batch first, then pending
// ones, then expired ones again for what is left; with pending first, a
// steady backlog kept a crashed instance's jobs waiting until it drained.
// Each state is its own range of the (state, next_run_at) index read in
// order, so the database reads and locks only the rows it returns;
// "state IN (…) ORDER BY next_run_at" would sort, and lock, every due row
// first, which under a backlog of tens of thousands of jobs exhausted
// InnoDB's lock memory (found by the chaos run).
//
// A release waits until its order's confirmation is DONE (see
// releaseAfterConfirm): otherwise a confirmation in backoff, or dead, let
// the refund's release go first, and the confirmation's retry then
// deducted stock for an order already refunded.
func dueJobs(tx *gorm.DB, now time.Time, n int) ([]uint64, error) {
	share := max(1, n/4)
	ids, err := due(tx, JobRunning, now, min(share, n), nil)
	if err != nil {
		return nil, err
	}
	expired := len(ids)
	more, err := due(tx, JobPending, now, n-len(ids), ids)
	if err != nil {
		return nil, err
	}
	ids = append(ids, more...)
	if expired == share && len(ids) < n { // more expired leases than their share, room left
		if more, err = due(tx, JobRunning, now, n-len(ids), ids); err != nil {
			return nil, err
		}
		ids = append(ids, more...)
	}
	return ids, nil
}

// due locks up to limit due jobs in state, oldest first, leaving out the
// ids already taken.
func due(tx *gorm.DB, state string, now time.Time, limit int, taken []uint64) ([]uint64, error) {
	if limit <= 0 {
		return nil, nil
	}
	q := tx.Model(&outboxJobRow{}).Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"}).
		Where("state = ? AND next_run_at <= ?", state, now).
		Where(releaseAfterConfirm, JobReleaseInventory, JobConfirmInventory, JobDone)
	if len(taken) > 0 {
		q = q.Where("id NOT IN ?", taken)
	}
	var ids []uint64
	err := q.Order("next_run_at").Limit(limit).Pluck("id", &ids).Error
	return ids, err
}

// releaseAfterConfirm holds a release back while its order has a
// confirmation that is not DONE. DONE is final, so a release never runs
// before its confirmation; the subquery uses the out_trade_no index.
const releaseAfterConfirm = `kind <> ? OR NOT EXISTS (SELECT 1 FROM outbox_jobs c
	WHERE c.out_trade_no = outbox_jobs.out_trade_no AND c.kind = ? AND c.state <> ?)`

var _ retry.Releaser = (*Outbox)(nil)

// Release implements retry.Releaser: a claim never attempted goes back to
// PENDING, due now, without counting an attempt; a job never attempted at
// all also gets its elapsed-time budget back (first_attempt_at).
func (o *Outbox) Release(ctx context.Context, job retry.Job, worker string) error {
	now := o.s.now()
	set := map[string]any{"state": JobPending, "lease_owner": nil, "lease_until": nil, "next_run_at": now,
		"attempts": gorm.Expr("attempts - 1"), "updated_at": now}
	if job.Attempt == 1 {
		set["first_attempt_at"] = nil
	}
	err := o.s.db.WithContext(ctx).Model(&outboxJobRow{}).
		Where("id = ? AND state = ? AND lease_owner = ? AND attempts = ?", job.ID, JobRunning, worker, job.Attempt).
		Updates(set).Error
	if err != nil {
		return fmt.Errorf("release outbox job %d: %w", job.ID, err)
	}
	return nil
}

// Complete implements retry.Queue; a skipped job keeps why in last_error.
func (o *Outbox) Complete(ctx context.Context, a retry.Attempt) error {
	return o.settle(ctx, a, map[string]any{"state": JobDone, "done_at": dbTime(a.FinishedAt), "last_error": a.Err}, nil)
}

// Retry implements retry.Queue.
func (o *Outbox) Retry(ctx context.Context, a retry.Attempt) error {
	return o.settle(ctx, a, map[string]any{"state": JobPending, "next_run_at": dbTime(a.NextRunAt), "last_error": a.Err}, nil)
}

// Dead implements retry.Queue. A dead confirmation takes its order's
// waiting releases with it (see holdReleases), and says so first if its
// order was reported refunded outside the gateway (markHeldOutside).
func (o *Outbox) Dead(ctx context.Context, a retry.Attempt) error {
	return o.settle(ctx, a, map[string]any{"state": JobDead, "last_error": a.Err},
		func(tx *gorm.DB) error {
			if err := o.s.holdReleases(tx, a.JobID); err != nil {
				return err
			}
			return o.s.markHeldOutside(tx, a)
		})
}

// settle records the attempt and, if the worker still holds the lease for
// this attempt, applies the job's new state, counting an Unsent attempt.
// The attempt row is kept even when the lease was lost: it happened, and
// operators want to see it; the job's count is not changed then, so a
// later attempt still counts it as maybe sent.
func (o *Outbox) settle(ctx context.Context, a retry.Attempt, set map[string]any, then func(tx *gorm.DB) error) error {
	lost := false
	if a.Unsent {
		set["unsent_attempts"] = gorm.Expr("unsent_attempts + 1")
	}
	err := o.s.inTx(ctx, func(tx *gorm.DB) error {
		row := outboxAttemptRow{JobID: a.JobID, Attempt: a.Number, Worker: a.Worker, Outcome: string(a.Outcome),
			Error: a.Err, StartedAt: dbTime(a.StartedAt), FinishedAt: dbTime(a.FinishedAt), Unsent: a.Unsent}
		if !a.NextRunAt.IsZero() {
			next := dbTime(a.NextRunAt)
			row.NextRunAt = &next
		}
		if err := tx.Create(&row).Error; err != nil {
			return err
		}
		set["lease_owner"], set["lease_until"], set["updated_at"] = nil, nil, o.s.now()
		res := tx.Model(&outboxJobRow{}).
			Where("id = ? AND state = ? AND lease_owner = ? AND attempts = ?", a.JobID, JobRunning, a.Worker, a.Number).
			Updates(set)
		if lost = res.RowsAffected == 0; res.Error != nil || lost || then == nil {
			return res.Error
		}
		return then(tx)
	})
	if err != nil {
		return fmt.Errorf("settle outbox job %d attempt %d (%s): %w", a.JobID, a.Number, a.Outcome, err)
	}
	if lost {
		return fmt.Errorf("settle outbox job %d attempt %d: %w", a.JobID, a.Number, retry.ErrLeaseLost)
	}
	return nil
}

// Job returns a job with its attempts, or ErrNotFound.
func (o *Outbox) Job(ctx context.Context, id uint64) (*OutboxJob, error) {
	var row outboxJobRow
	err := o.s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("read outbox job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read outbox job %d: %w", id, err)
	}
	jobs, err := o.withHistory(ctx, []outboxJobRow{row}, 0)
	if err != nil {
		return nil, err
	}
	return &jobs[0], nil
}

// JobsOf lists the jobs of an order with their attempts, oldest first.
func (o *Outbox) JobsOf(ctx context.Context, outTradeNo string) ([]OutboxJob, error) {
	var rows []outboxJobRow
	if err := o.s.db.WithContext(ctx).Where("out_trade_no = ?", outTradeNo).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read outbox jobs of %s: %w", outTradeNo, err)
	}
	return o.withHistory(ctx, rows, 0)
}

// DeadHistory is how many of a dead job's latest attempts DeadJobs lists
// (the job's attempt count says how many there were): a day of retries
// makes hundreds per job.
const DeadHistory = 20

// DeadJobs lists up to limit dead jobs, oldest first, each with its last
// DeadHistory attempts.
func (o *Outbox) DeadJobs(ctx context.Context, limit int) ([]OutboxJob, error) {
	var rows []outboxJobRow
	if err := o.s.db.WithContext(ctx).Where("state = ?", JobDead).Order("id").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read dead outbox jobs: %w", err)
	}
	return o.withHistory(ctx, rows, DeadHistory)
}

// withHistory adds to each job its attempts, oldest first: all of them,
// or its last keep.
func (o *Outbox) withHistory(ctx context.Context, rows []outboxJobRow, keep int) ([]OutboxJob, error) {
	out := make([]OutboxJob, len(rows))
	if len(rows) == 0 {
		return out, nil
	}
	ids := make([]uint64, len(rows))
	byID := map[uint64]int{}
	for i, r := range rows {
		out[i], ids[i], byID[r.ID] = r.job(), r.ID, i
		out[i].History = []retry.Attempt{}
	}
	q := o.s.db.WithContext(ctx).Where("job_id IN ?", ids)
	if keep > 0 { // both MariaDB (10.2+) and SQLite (3.25+) have window functions
		latest := o.s.db.Table("outbox_attempts").Where("job_id IN ?", ids).
			Select("*, ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY id DESC) AS nth")
		q = o.s.db.WithContext(ctx).Table("(?) AS latest", latest).Where("nth <= ?", keep)
	}
	var attempts []outboxAttemptRow
	if err := q.Order("id").Find(&attempts).Error; err != nil {
		return nil, fmt.Errorf("read outbox attempts: %w", err)
	}
	for _, a := range attempts {
		i := byID[a.JobID]
		out[i].History = append(out[i].History, a.attempt())
	}
	return out, nil
}

// Replay puts a dead job back in the queue to run now (a confirmation
// with the releases it held, see holdReleases), on behalf of by
// (an operator's key name, or "cli"), and appends a "replayed" row to the
// job's history in the same transaction. Its attempt count and history
// stay, so the next attempt asks the other side first; its elapsed-time
// budget starts again. Errors: ErrNotFound, ErrConflict when the job is
// not dead or is a release whose confirmation is not DONE.
func (o *Outbox) Replay(ctx context.Context, id uint64, by string) (*OutboxJob, error) {
	return o.ReplayIf(ctx, id, by, nil)
}

// ReplayIf is Replay of the job as a person saw it: unless versions is nil
// (any version), when the dead job is at none of them (it changed since:
// held again, say, for a refund outside the gateway that came after the
// look), it is left as it is and the error is ErrStale, with the job as it
// is now. An empty, non-nil versions matches no job.
func (o *Outbox) ReplayIf(ctx context.Context, id uint64, by string, versions []string) (*OutboxJob, error) {
	var replayed, stale bool
	err := o.s.inTx(ctx, func(tx *gorm.DB) error {
		now := o.s.now()
		var row outboxJobRow
		err := lockForUpdate(tx).Where("id = ? AND state = ?", id, JobDead).Take(&row).Error
		if replayed = err == nil; errors.Is(err, gorm.ErrRecordNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if stale = versions != nil && !slices.Contains(versions, jobVersion(row.UpdatedAt)); stale {
			return nil
		}
		if err := o.s.releaseReplayable(tx, row); err != nil {
			return err
		}
		if err := replayRow(tx, row, by, now); err != nil {
			return err
		}
		return o.s.reviveReleases(tx, row, by, now)
	})
	if err != nil && !errors.Is(err, ErrConflict) {
		return nil, fmt.Errorf("replay outbox job %d: %w", id, err)
	}
	job, jerr := o.Job(ctx, id)
	if jerr != nil {
		return nil, jerr
	}
	if err != nil { // a held release whose confirmation is not done
		return job, err
	}
	if !replayed {
		return job, fmt.Errorf("replay outbox job %d in state %s: %w", id, job.State, ErrConflict)
	}
	if stale {
		return job, fmt.Errorf("replay outbox job %d seen at version %s, changed since (version %s, last error %q): %w",
			id, strings.Join(versions, ", "), job.Version, job.LastError, ErrStale)
	}
	return job, nil
}
