package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// ReconcileClaim is a lease on one day's reconciliation: while it holds,
// no other run of that day starts, in this instance or another.
type ReconcileClaim struct {
	Day   string
	Owner string // random, one per run
	Until time.Time
}

// ClaimReconciliation leases the reconciliation of a business day for ttl,
// on the store's clock (the database's in production, so that instances
// agree on when a lease ends). A day without a row gets a PENDING one.
// The lease ends when Reconcile stores the report, on
// ReleaseReconciliation, or at ttl if the run died. Errors: ErrClaimed when
// another run holds the day.
func (s *Store) ClaimReconciliation(ctx context.Context, day string, ttl time.Duration) (*ReconcileClaim, error) {
	start, err := DayStart(day)
	if err != nil {
		return nil, err
	}
	now := s.now()
	c := &ReconcileClaim{Day: DayOf(start), Owner: newClaimOwner(), Until: now.Add(ttl)}
	db := s.db.WithContext(ctx)
	res := db.Model(&reconciliationRow{}).
		Where("bill_date = ? AND (claimed_until IS NULL OR claimed_until <= ?)", c.Day, now).
		UpdateColumns(map[string]any{"claimed_by": c.Owner, "claimed_until": c.Until})
	if res.Error != nil {
		return nil, fmt.Errorf("claim reconciliation %s: %w", c.Day, res.Error)
	}
	if res.RowsAffected == 1 {
		return c, nil
	}
	// No row, or a row whose lease holds: insert, and let the unique key
	// on bill_date tell the two apart.
	row := reconciliationRow{BillDate: c.Day, Status: ReconcilePending, ClaimedBy: &c.Owner,
		ClaimedUntil: &c.Until, CreatedAt: now, UpdatedAt: now}
	err = db.Create(&row).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return nil, fmt.Errorf("claim reconciliation %s: %w", c.Day, ErrClaimed)
	}
	if err != nil {
		return nil, fmt.Errorf("claim reconciliation %s: %w", c.Day, err)
	}
	return c, nil
}

// ReleaseReconciliation ends a claim whose run failed, so the day can be
// run again at once. A claim already taken over is left alone.
func (s *Store) ReleaseReconciliation(ctx context.Context, c *ReconcileClaim) error {
	err := s.db.WithContext(ctx).Model(&reconciliationRow{}).
		Where("bill_date = ? AND claimed_by = ?", c.Day, c.Owner).
		UpdateColumns(map[string]any{"claimed_by": nil, "claimed_until": nil}).Error
	if err != nil {
		return fmt.Errorf("release reconciliation %s: %w", c.Day, err)
	}
	return nil
}

// holds reports whether row is still claimed by c.
func (c *ReconcileClaim) holds(row reconciliationRow) bool {
	return row.ClaimedBy != nil && *row.ClaimedBy == c.Owner
}

func newClaimOwner() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
