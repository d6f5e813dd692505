// Package ledger keeps the money records (payments, refunds, notifications)
// and their state machines. Every state change runs in one DB transaction
// with an append-only history row; unique keys make replays harmless.
package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"paygateway/migrations"
)

// Store is the gorm-backed ledger.
type Store struct {
	db      *gorm.DB
	dialect migrations.Dialect
	now     func() time.Time
	// refundMoved, if set, is told the state of each refund change
	// committed (creation included).
	refundMoved func(RefundState)
	// solo holds a slot per update of a failed batch being applied on its
	// own; shared by every batch of the store (and its copies).
	solo chan struct{}
}

// NewStore wraps an open, migrated database.
func NewStore(db *gorm.DB, d migrations.Dialect) *Store {
	return &Store{db: db, dialect: d, now: func() time.Time { return dbTime(time.Now()) },
		solo: make(chan struct{}, soloConcurrency)}
}

// WithClock returns a copy of the store that reads time from now.
func (s *Store) WithClock(now func() time.Time) *Store {
	c := *s
	c.now = func() time.Time { return dbTime(now()) }
	return &c
}

// dbTime is t as the ledger stores it: UTC, cut to the microsecond.
// DATETIME(6) holds no more: MariaDB cuts the rest on write, MySQL 8
// rounds it, which can carry a time into the next second or business
// day. Cut before it is used, a time answered before it is stored is the
// one read back, on every database. Every time a row takes goes through
// it: the store's clock, and each caller-supplied time where it enters.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// WithRefundObserver returns a copy of the store that tells fn the state
// each committed refund change reached (for metrics: counting them is
// cheaper than counting the refunds table).
func (s *Store) WithRefundObserver(fn func(RefundState)) *Store {
	c := *s
	c.refundMoved = fn
	return &c
}

// WithDB returns a copy of the store (its clock and observer included)
// on another handle of the same database, e.g. a pool of its own.
func (s *Store) WithDB(db *gorm.DB) *Store {
	c := *s
	c.db = db
	return &c
}

func (s *Store) noteRefund(state RefundState) {
	if s.refundMoved != nil {
		s.refundMoved(state)
	}
}

// DB returns the underlying gorm handle.
func (s *Store) DB() *gorm.DB { return s.db }

// Dialect returns the SQL dialect of the database.
func (s *Store) Dialect() migrations.Dialect { return s.dialect }

// Now returns the store's current time in UTC.
func (s *Store) Now() time.Time { return s.now() }

// Ping checks that the database answers and has every migration applied.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	n, err := migrations.Pending(ctx, sqlDB, s.dialect)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%d migrations pending", n)
	}
	return s.writable(ctx, sqlDB)
}

// writable refuses a MySQL server in read-only mode: after a failover a
// pool may still reach the demoted primary, where every write fails (for
// the gateway's user, which has no SUPER) while reads and pings succeed.
// Not ready then, so traffic goes to instances that can record.
func (s *Store) writable(ctx context.Context, db *sql.DB) error {
	if s.dialect != migrations.MySQL {
		return nil
	}
	var readOnly int
	if err := db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&readOnly); err != nil {
		return fmt.Errorf("read @@read_only: %w", err)
	}
	if readOnly != 0 {
		return errors.New("the database is read-only (a demoted primary after a failover?)")
	}
	return nil
}

// inTx runs fn in a transaction, retrying when MySQL picks it as a
// deadlock victim or a lock wait times out; fn must be safe to rerun.
// Duplicate-key checks take shared next-key locks even under READ
// COMMITTED, so many twins of one order deadlock in rounds; each round
// lets at least one through, so a growing, jittered budget always drains.
func (s *Store) inTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	var err error
	run := fn
	if s.dialect == migrations.MySQL {
		run = func(tx *gorm.DB) error {
			if err := fn(tx); err != nil {
				rollbackWithin(tx)
				return err
			}
			return commitWithin(tx)
		}
	}
	for attempt := 0; attempt < 40; attempt++ {
		flags := &flagged{}
		err = s.db.WithContext(context.WithValue(ctx, flaggedKey{}, flags)).Transaction(run)
		if err == nil {
			flags.log(ctx)
		}
		if !retryableTxError(err) || ctx.Err() != nil {
			return err
		}
		ceiling := min(2*(attempt+1), 50) // ms
		time.Sleep(time.Duration(1+rand.IntN(ceiling)) * time.Millisecond)
	}
	return err
}

// commitWithin commits tx's transaction as a statement, which ends with
// tx's context: the MySQL driver sends the COMMIT of database/sql's
// Tx.Commit without watching any context, so a server that hangs just
// then held the caller (an outbox worker, a notification batch, a
// shutdown waiting for them) for the pool's whole read timeout,
// whatever its deadline. An error leaves the outcome unknown, as any
// failed commit does. gorm's own Tx.Commit then finds no transaction open
// and costs a round trip that commits nothing.
func commitWithin(tx *gorm.DB) error {
	if err := tx.Exec("COMMIT").Error; err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// rollbackWithin ends tx's transaction as a statement bound by tx's
// context, for the same reason as commitWithin: gorm's Tx.Rollback, which
// follows (and then rolls nothing back), is sent without one. Its error
// is the caller's error's business: a closed connection rolls back anyway.
func rollbackWithin(tx *gorm.DB) {
	_ = tx.Exec("ROLLBACK").Error
}

func retryableTxError(err error) bool {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205 // deadlock, lock wait timeout
	}
	return false
}

// lockForUpdate adds FOR UPDATE on MySQL; SQLite's single writer already
// serialises transactions and gorm drops the clause there.
func lockForUpdate(tx *gorm.DB) *gorm.DB {
	return tx.Clauses(clause.Locking{Strength: "UPDATE"})
}

func (s *Store) appendHistory(tx *gorm.DB, t Transition) error {
	row := s.historyRow(t)
	if err := tx.Create(&row).Error; err != nil {
		return fmt.Errorf("append history %s %s %s→%s: %w", t.Entity, t.EntityKey, t.From, t.To, err)
	}
	return nil
}

func (s *Store) historyRow(t Transition) historyRow {
	return historyRow{Entity: t.Entity, EntityKey: t.EntityKey, OutTradeNo: t.OutTradeNo,
		FromState: t.From, ToState: t.To, Source: t.Source, Ref: t.Ref, CreatedAt: s.now()}
}

// History lists every state transition of an order (its payment and its
// refunds) in the order they happened.
func (s *Store) History(ctx context.Context, outTradeNo string) ([]Transition, error) {
	var rows []historyRow
	err := s.db.WithContext(ctx).Where("out_trade_no = ?", outTradeNo).Order("id").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", outTradeNo, err)
	}
	out := make([]Transition, len(rows))
	for i, r := range rows {
		out[i] = r.transition()
	}
	return out, nil
}
