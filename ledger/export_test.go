package ledger

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// RefundSucceeded runs the refund-success effects in a transaction of
// their own, so tests reach them before the refunds state machine exists.
func (s *Store) RefundSucceeded(ctx context.Context, outRefundNo, outTradeNo string, amount int64) error {
	return s.inTx(ctx, func(tx *gorm.DB) error { return s.refundSucceeded(tx, outRefundNo, outTradeNo, amount) })
}

// InsertDueJobs stores n pending jobs, all due.
func (s *Store) InsertDueJobs(ctx context.Context, prefix string, n int) error {
	rows := make([]outboxJobRow, n)
	for i := range rows {
		row, err := s.jobRow(JobConfirmInventory, fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("%s-%d", prefix, i), "", struct{}{})
		if err != nil {
			return err
		}
		row.NextRunAt = row.NextRunAt.Add(-time.Minute)
		rows[i] = row
	}
	return s.db.WithContext(ctx).CreateInBatches(rows, 1000).Error
}

// RowsLockedByClaim runs the claim's locking read for n jobs in a
// transaction and reports how many rows InnoDB locked for it (MySQL only).
func (s *Store) RowsLockedByClaim(ctx context.Context, n int) (ids []uint64, locked int64, err error) {
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if ids, err = dueJobs(tx, s.now(), n); err != nil {
			return err
		}
		return tx.Raw("SELECT trx_rows_locked FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = CONNECTION_ID()").
			Scan(&locked).Error
	})
	return ids, locked, err
}

// DaySumSQL is the SQL of the day-total query of table ("payments" or
// "refunds") for [start, end), for EXPLAIN.
func (s *Store) DaySumSQL(table string, start, end time.Time) string {
	q := paidSum
	if table == "refunds" {
		q = refundedSum
	}
	return s.db.ToSQL(func(tx *gorm.DB) *gorm.DB {
		var r sumRow
		return q(tx, start, end).Scan(&r)
	})
}

// PruneSQL is the SQL that finds prunable idempotency keys, for EXPLAIN.
func (s *Store) PruneSQL() string {
	return s.db.ToSQL(func(tx *gorm.DB) *gorm.DB {
		var ids []uint64
		return prunable(tx, s.now()).Limit(500).Pluck("id", &ids)
	})
}

// NarrowNotices is narrowNotices, for tests.
func (s *Store) NarrowNotices(ctx context.Context, q ListQuery) (ListQuery, error) {
	return s.narrowNotices(ctx, q)
}

// NoticeOrderSQL is the SQL of each read narrowNotices may make to find
// the order of q's transaction or refund, for EXPLAIN.
func (s *Store) NoticeOrderSQL(q ListQuery) []string {
	var out []string
	for _, l := range orderLookups(q) {
		out = append(out, s.db.ToSQL(func(tx *gorm.DB) *gorm.DB {
			var orders []string
			return l.read(tx).Pluck("out_trade_no", &orders)
		}))
	}
	return out
}

var specs = map[string]listSpec{"payments": paymentsSpec, "refunds": refundsSpec, "notifications": noticesSpec,
	"outbox_jobs": outboxSpec, "audit_log": auditSpec}

// FirstIDSQL is the SQL that finds where the first page of a list from a
// time starts, for EXPLAIN ("" for a list that has no index on its time).
func (s *Store) FirstIDSQL(list string, q ListQuery) string {
	if !specs[list].timeIndexed {
		return ""
	}
	return s.db.ToSQL(func(tx *gorm.DB) *gorm.DB {
		var id *uint64
		return specs[list].firstID(tx, q).Scan(&id)
	})
}

// ListSQL is the SQL of a finance list query ("payments", "refunds",
// "notifications", "outbox_jobs", "audit_log"), for EXPLAIN; a first page
// from a time is started at its first id, as each does.
func (s *Store) ListSQL(list string, q ListQuery) string {
	q, _, err := specs[list].startAtFrom(context.Background(), s.db, q)
	if err != nil {
		panic(err)
	}
	return s.db.ToSQL(func(tx *gorm.DB) *gorm.DB {
		scoped, err := specs[list].scope(tx.Table(list), q)
		if err != nil {
			panic(err)
		}
		var rows []map[string]any
		return scoped.Find(&rows)
	})
}

// MakeDue moves a job's next run to now.
func (s *Store) MakeDue(ctx context.Context, id uint64) error {
	return s.db.WithContext(ctx).Model(&outboxJobRow{}).Where("id = ?", id).Update("next_run_at", s.now()).Error
}

// RenameTable renames a table (both dialects), to make its writes fail.
func (s *Store) RenameTable(ctx context.Context, from, to string) error {
	return s.db.WithContext(ctx).Exec("ALTER TABLE " + from + " RENAME TO " + to).Error
}

// StaleIdemRow is an idempotency row as a retry read it.
type StaleIdemRow struct{ row idemRow }

// ReadIdemRow reads (scope, key) as BeginIdempotent does before judging it.
func (s *Store) ReadIdemRow(ctx context.Context, scope, key string) (StaleIdemRow, error) {
	var r idemRow
	err := s.db.WithContext(ctx).Where("scope = ? AND idem_key = ?", scope, key).Take(&r).Error
	return StaleIdemRow{r}, err
}

// DecideOnStale judges and takes over a key from a row read earlier, as a
// retry does when another request changes the row between its read and
// its conditional update.
func (s *Store) DecideOnStale(ctx context.Context, stale StaleIdemRow, hash string, lockFor, keep time.Duration) (*IdemKey, bool, error) {
	now := s.now()
	return s.decideIdempotent(s.db.WithContext(ctx), &stale.row, hash, now, now.Add(lockFor), keep)
}

// CheckPaymentAsRead checks a bill payment against the ledger as a run
// read it before: nil, as if the payment were not recorded yet.
func (s *Store) CheckPaymentAsRead(ctx context.Context, bp BillPayment) (*ReconcileItem, error) {
	return s.checkPayment(ctx, bp, nil, &Bill{})
}

// CheckRefundedPaymentAsRead is CheckPaymentAsRead for a payment WeChat
// Pay's order query reports refunded (trade_state REFUND).
func (s *Store) CheckRefundedPaymentAsRead(ctx context.Context, bp BillPayment) (*ReconcileItem, error) {
	return s.checkPayment(ctx, bp, nil, &Bill{Confirm: func(_ context.Context, bp BillPayment) (Confirmed, error) {
		return Confirmed{Refunded: true, PayerTotal: bp.Amount}, nil
	}})
}

// SetDayPage sets how many rows a reconciliation read takes per statement
// until the returned func restores it.
func SetDayPage(n int) (restore func()) {
	old := dayPage
	dayPage = n
	return func() { dayPage = old }
}

// RepairPayment is reconciliation's repair of one bill payment the ledger
// lacked when the run read it.
func (s *Store) RepairPayment(ctx context.Context, bp BillPayment, c Confirmed) (string, string, error) {
	return s.repairPayment(ctx, bp, c)
}
