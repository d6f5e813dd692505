package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Anomaly kinds: facts that need a person, kept outside the money tables.
const (
	AnomalyAmountMismatch   = "AMOUNT_MISMATCH"
	AnomalyDuplicatePayment = "DUPLICATE_PAYMENT"
	AnomalyPayerMismatch    = "PAYER_MISMATCH"
	// AnomalyRefundedOutside: a payment first learnt as already refunded
	// (trade_state REFUND, or a REFUND.SUCCESS notice that came before the
	// payment), by no refund the gateway made.
	AnomalyRefundedOutside = "REFUNDED_OUTSIDE"
	// AnomalyPaidAfterClose: a registered order the ledger had closed
	// (unpaid at its expire_at, WeChat Pay said) was paid after all.
	AnomalyPaidAfterClose = "PAID_AFTER_CLOSE"
)

// AnomalyKinds lists every kind the ledger flags.
var AnomalyKinds = []string{AnomalyAmountMismatch, AnomalyDuplicatePayment, AnomalyPayerMismatch, AnomalyRefundedOutside,
	AnomalyPaidAfterClose, AnomalyRefundAmountMismatch, AnomalyUnknownRefund, AnomalyStaleRefundStatus, AnomalyLateRefundSuccess}

// Anomaly states: a person resolves an OPEN anomaly once they have dealt
// with it (refunded the second payment, say), with a note.
const (
	AnomalyOpen     = "OPEN"
	AnomalyResolved = "RESOLVED"
)

// AnomalyStates lists the states an anomaly can be in.
var AnomalyStates = []string{AnomalyOpen, AnomalyResolved}

// anomalyMachine: a person resolves an open anomaly; nothing reopens it.
var anomalyMachine = machine{AnomalyOpen: {AnomalyResolved}}

// Anomaly is a flagged event. A repeat of the same (kind, ref) raises its
// count instead of adding a row; it does not reopen a resolved one (the
// daily re-check of a mismatched payment sees the same fact again).
type Anomaly struct {
	Kind       string     `json:"kind"`
	Ref        string     `json:"ref"`
	OutTradeNo string     `json:"out_trade_no"`
	Detail     string     `json:"detail"`
	SeenCount  int        `json:"seen_count"`
	FirstSeen  time.Time  `json:"first_seen"`
	LastSeen   time.Time  `json:"last_seen"`
	State      string     `json:"state"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	ResolvedBy string     `json:"resolved_by,omitempty"`
	Resolution string     `json:"resolution,omitempty"`
}

type anomalyRow struct {
	ID         uint64 `gorm:"primaryKey"`
	Kind       string
	Ref        string
	OutTradeNo string
	Detail     string
	SeenCount  int
	FirstSeen  time.Time
	LastSeen   time.Time
	State      string
	ResolvedAt *time.Time
	ResolvedBy *string
	Resolution *string
}

func (anomalyRow) TableName() string { return "anomalies" }

// RecordAnomaly flags an event for people to look at.
func (s *Store) RecordAnomaly(ctx context.Context, a Anomaly) error {
	return s.recordAnomaly(s.db.WithContext(ctx), a)
}

// recordAnomaly flags a in tx (or a plain session).
func (s *Store) recordAnomaly(tx *gorm.DB, a Anomaly) error {
	now := s.now()
	row := anomalyRow{Kind: a.Kind, Ref: a.Ref, OutTradeNo: a.OutTradeNo, Detail: a.Detail,
		SeenCount: 1, FirstSeen: now, LastSeen: now, State: AnomalyOpen}
	err := tx.Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "kind"}, {Name: "ref"}},
		DoUpdates: clause.Assignments(map[string]any{"seen_count": gorm.Expr("seen_count + 1"), "last_seen": now}),
	}).Create(&row).Error
	if err != nil {
		return fmt.Errorf("record anomaly %s %s: %w", a.Kind, a.Ref, err)
	}
	if f, ok := tx.Statement.Context.Value(flaggedKey{}).(*flagged); ok {
		f.list = append(f.list, a) // logged once the transaction commits
	} else {
		logFlag(tx.Statement.Context, a)
	}
	return nil
}

// flagged collects the anomalies a transaction records, to be logged
// only once it commits: a rolled-back (or retried) transaction flagged
// nothing.
type flagged struct{ list []Anomaly }

type flaggedKey struct{}

func (f *flagged) log(ctx context.Context) {
	for _, a := range f.list {
		logFlag(ctx, a)
	}
}

// logFlag logs a stored anomaly: each needs a person, so it is logged as
// well as stored (and counted in gateway_anomalies), not only visible to
// whoever opens the order. Its detail stays in the ledger: some name the
// payers' openids, which have no business in the logs.
func logFlag(ctx context.Context, a Anomaly) {
	slog.WarnContext(ctx, "anomaly flagged", "kind", a.Kind, "ref", a.Ref, "out_trade_no", a.OutTradeNo)
}

// AnomalyListItem is an anomaly in a list, with its row id for the cursor.
type AnomalyListItem struct {
	ID uint64 `json:"id"`
	Anomaly
}

func (r anomalyRow) listItem() AnomalyListItem {
	return AnomalyListItem{ID: r.ID, Anomaly: r.anomaly()}
}

func (r anomalyRow) anomaly() Anomaly {
	a := Anomaly{Kind: r.Kind, Ref: r.Ref, OutTradeNo: r.OutTradeNo, Detail: r.Detail,
		SeenCount: r.SeenCount, FirstSeen: r.FirstSeen.UTC(), LastSeen: r.LastSeen.UTC(), State: r.State}
	if r.ResolvedAt != nil {
		at := r.ResolvedAt.UTC()
		a.ResolvedAt = &at
	}
	if r.ResolvedBy != nil {
		a.ResolvedBy = *r.ResolvedBy
	}
	if r.Resolution != nil {
		a.Resolution = *r.Resolution
	}
	return a
}

// MaxResolutionBytes caps the note a person leaves when resolving.
const MaxResolutionBytes = 512

// ResolveAnomaly marks an OPEN anomaly RESOLVED by by, with a note of what
// was done. It answers ErrNotFound for an unknown id and ErrConflict (with
// the anomaly as it stands) for one already resolved: a second person
// resolving it, or a retried request, does not overwrite the first note.
func (s *Store) ResolveAnomaly(ctx context.Context, id uint64, by, note string) (AnomalyListItem, error) {
	var row anomalyRow
	resolved := false
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		res := tx.Model(&anomalyRow{}).Where("id = ? AND state = ?", id, AnomalyOpen).
			Updates(map[string]any{"state": AnomalyResolved, "resolved_at": s.now(),
				"resolved_by": truncate(by, 128), "resolution": truncate(note, MaxResolutionBytes)})
		if res.Error != nil {
			return fmt.Errorf("resolve: %w", res.Error)
		}
		if err := tx.Where("id = ?", id).Take(&row).Error; errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrNotFound
		} else if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if resolved = res.RowsAffected == 1; !resolved {
			return nil
		}
		t := Transition{Entity: EntityAnomaly, EntityKey: strconv.FormatUint(id, 10), OutTradeNo: row.OutTradeNo,
			From: AnomalyOpen, To: AnomalyResolved, Source: SourceAPI, Ref: truncate(by, 128)}
		if err := anomalyMachine.check(t.Entity, t.EntityKey, t.From, t.To); err != nil {
			return err
		}
		return s.appendHistory(tx, t)
	})
	switch {
	case err != nil:
		return AnomalyListItem{}, fmt.Errorf("anomaly %d: %w", id, err)
	case !resolved:
		return row.listItem(), fmt.Errorf("anomaly %d is already %s: %w", id, row.State, ErrConflict)
	}
	slog.InfoContext(ctx, "anomaly resolved", "id", id, "kind", row.Kind, "ref", row.Ref, "by", by)
	return row.listItem(), nil
}

// EachAnomaly streams the anomalies matching q (kind, state, out_trade_no,
// from/to on last_seen), oldest first: the list finance reads to find
// what needs a person (a second payment, an unknown refund, …) without
// knowing the order first.
func (s *Store) EachAnomaly(ctx context.Context, q ListQuery, fn func(AnomalyListItem) error) error {
	return each(ctx, s.db, anomaliesSpec, q, anomalyRow.listItem, fn)
}

// Anomalies lists the anomalies flagged for an order.
func (s *Store) Anomalies(ctx context.Context, outTradeNo string) ([]Anomaly, error) {
	var rows []anomalyRow
	if err := s.db.WithContext(ctx).Where("out_trade_no = ?", outTradeNo).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read anomalies of %s: %w", outTradeNo, err)
	}
	out := make([]Anomaly, len(rows))
	for i, r := range rows {
		out[i] = r.anomaly()
	}
	return out, nil
}
