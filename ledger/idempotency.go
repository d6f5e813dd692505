package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Idempotency key states.
const (
	IdemInFlight = "IN_FLIGHT"
	IdemDone     = "DONE"
)

// Errors BeginIdempotent returns.
var (
	// ErrInFlight means a request with the same key is still running.
	ErrInFlight = errors.New("ledger: idempotency key in use by a running request")
	// ErrIdempotencyMismatch means the key was used with other parameters.
	ErrIdempotencyMismatch = errors.New("ledger: idempotency key reused with other parameters")
)

// IdemKey is a stored idempotency key and, once DONE, its answer.
type IdemKey struct {
	Scope        string
	Key          string
	RequestHash  string
	State        string
	StatusCode   int
	ResponseBody []byte
	ResourceKey  string // out_refund_no once the refund exists
	LockedUntil  time.Time
	ExpiresAt    time.Time
}

type idemRow struct {
	ID           uint64 `gorm:"primaryKey"`
	Scope        string
	IdemKey      string
	RequestHash  string
	State        string
	StatusCode   int
	ResponseBody *string
	ResourceKey  *string
	LockedUntil  *time.Time
	CreatedAt    time.Time
	ExpiresAt    time.Time
}

func (idemRow) TableName() string { return "idempotency_keys" }

func (r *idemRow) key() *IdemKey {
	k := &IdemKey{Scope: r.Scope, Key: r.IdemKey, RequestHash: r.RequestHash, State: r.State,
		StatusCode: r.StatusCode, ResourceKey: deref(r.ResourceKey), ExpiresAt: r.ExpiresAt.UTC()}
	if r.ResponseBody != nil {
		k.ResponseBody = []byte(*r.ResponseBody)
	}
	if r.LockedUntil != nil {
		k.LockedUntil = r.LockedUntil.UTC()
	}
	return k
}

// BeginIdempotent claims (scope, key) for a request whose parameters hash
// to requestHash. The unique key decides who runs. It returns:
//   - run=true: the caller executes; if the key belonged to a request that
//     crashed (IN_FLIGHT past locked_until) it is taken over, and
//     ResourceKey names the refund it must continue;
//   - run=false: the key is DONE; replay StatusCode and ResponseBody;
//   - ErrInFlight: another request holds the key;
//   - ErrIdempotencyMismatch: the key was used with other parameters.
//
// lockFor bounds how long a request may hold the key; keep is how long
// a key that names no refund is kept (at least 24 h); one that names a
// refund never expires.
func (s *Store) BeginIdempotent(ctx context.Context, scope, key, requestHash string, lockFor, keep time.Duration) (*IdemKey, bool, error) {
	out, run, err := s.beginIdempotent(s.db.WithContext(ctx), scope, key, requestHash, lockFor, keep)
	if err != nil {
		return out, false, fmt.Errorf("idempotency key %s: %w", key, err)
	}
	return out, run, nil
}

// beginIdempotent uses single statements, never a read-then-lock
// transaction: many requests racing on one key would otherwise deadlock
// upgrading the shared lock a duplicate insert takes. A plain INSERT
// decides who runs (the unique key); a takeover is a conditional UPDATE.
// (Plain INSERT, not ON DUPLICATE KEY: MariaDB's RETURNING makes gorm
// report a duplicate as one row affected.)
func (s *Store) beginIdempotent(db *gorm.DB, scope, key, hash string, lockFor, keep time.Duration) (*IdemKey, bool, error) {
	for attempt := 0; attempt < 3; attempt++ {
		now := s.now()
		locked := now.Add(lockFor)
		row := idemRow{Scope: scope, IdemKey: key, RequestHash: hash, State: IdemInFlight,
			LockedUntil: &locked, CreatedAt: now, ExpiresAt: now.Add(keep)}
		err := db.Create(&row).Error
		if err == nil {
			return row.key(), true, nil
		}
		if !errors.Is(err, gorm.ErrDuplicatedKey) {
			return nil, false, fmt.Errorf("insert: %w", err)
		}
		var have idemRow
		err = db.Where("scope = ? AND idem_key = ?", scope, key).Take(&have).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			continue // released or pruned meanwhile: insert again
		}
		if err != nil {
			return nil, false, fmt.Errorf("read: %w", err)
		}
		k, run, err := s.decideIdempotent(db, &have, hash, now, locked, keep)
		if k != nil || err != nil {
			return k, run, err
		}
	}
	return nil, false, ErrInFlight
}

// decideIdempotent judges an existing key; nil, false, nil means "lost a
// race, look again".
func (s *Store) decideIdempotent(db *gorm.DB, have *idemRow, hash string, now, locked time.Time, keep time.Duration) (*IdemKey, bool, error) {
	// An in-flight key whose holder died before creating anything (its
	// lock ran out, no refund named) holds nothing to protect: it starts
	// afresh like an expired one, so a corrected retry is not refused as
	// a mismatch for the key's whole life.
	// A key that names a refund never expires: a client retrying it days
	// later is answered with that refund, never given a second one.
	orphan := have.State == IdemInFlight && have.ResourceKey == nil &&
		(have.LockedUntil == nil || !have.LockedUntil.After(now))
	expired := have.ResourceKey == nil && !have.ExpiresAt.After(now) || orphan
	switch {
	case !expired && have.RequestHash != hash:
		return have.key(), false, ErrIdempotencyMismatch
	case !expired && have.State == IdemDone:
		return have.key(), false, nil
	case !expired && have.LockedUntil != nil && have.LockedUntil.After(now):
		return have.key(), false, ErrInFlight
	}
	updates := map[string]any{"locked_until": locked}
	if expired { // an old key starts afresh
		updates = map[string]any{"request_hash": hash, "state": IdemInFlight, "status_code": 0,
			"response_body": nil, "resource_key": nil, "locked_until": locked, "created_at": now,
			"expires_at": now.Add(keep)}
	}
	// Conditional on everything the decision read: of two requests taking
	// over, one wins; and a holder that linked its refund (or finished)
	// after our read makes us lose, instead of our reset undoing its link.
	q := db.Model(&idemRow{}).Where("id = ? AND state = ? AND expires_at = ? AND (locked_until IS NULL OR locked_until = ?)",
		have.ID, have.State, have.ExpiresAt, have.LockedUntil).Where("request_hash = ?", have.RequestHash)
	if have.ResourceKey == nil {
		q = q.Where("resource_key IS NULL")
	} else {
		q = q.Where("resource_key = ?", *have.ResourceKey)
	}
	res := q.Updates(updates)
	if res.Error != nil {
		return nil, false, fmt.Errorf("take over: %w", res.Error)
	}
	if res.RowsAffected != 1 {
		return nil, false, nil
	}
	if expired {
		fresh := idemRow{ID: have.ID, Scope: have.Scope, IdemKey: have.IdemKey, RequestHash: hash, State: IdemInFlight,
			LockedUntil: &locked, CreatedAt: now, ExpiresAt: now.Add(keep)}
		return fresh.key(), true, nil
	}
	have.LockedUntil = &locked
	return have.key(), true, nil
}

// linkIdempotency names the refund a key created, inside the refund's
// transaction. A key that already names a resource, or that a request with
// other parameters took over (hash is the holder's), gives ErrConflict.
func (s *Store) linkIdempotency(tx *gorm.DB, scope, key, hash, resource string) error {
	if scope == "" && key == "" {
		return nil
	}
	res := tx.Model(&idemRow{}).Where("scope = ? AND idem_key = ? AND state = ? AND resource_key IS NULL AND request_hash = ?",
		scope, key, IdemInFlight, hash).Update("resource_key", resource)
	if res.Error != nil {
		return fmt.Errorf("link idempotency key: %w", res.Error)
	}
	if res.RowsAffected != 1 {
		return fmt.Errorf("link idempotency key %s to %s: %w", key, resource, ErrConflict)
	}
	return nil
}

// FinishIdempotent stores the final answer of the request holding the key
// with parameters hashing to hash; a key another request took over with
// other parameters meanwhile is left to that one.
func (s *Store) FinishIdempotent(ctx context.Context, scope, key, hash string, status int, body []byte) error {
	return finishIdempotent(s.db.WithContext(ctx), scope, key, hash, status, body)
}

func finishIdempotent(db *gorm.DB, scope, key, hash string, status int, body []byte) error {
	b := string(body)
	res := db.Model(&idemRow{}).Where("scope = ? AND idem_key = ? AND state = ? AND request_hash = ?",
		scope, key, IdemInFlight, hash).
		Updates(map[string]any{"state": IdemDone, "status_code": status, "response_body": &b, "locked_until": nil})
	if res.Error != nil {
		return fmt.Errorf("finish idempotency key %s: %w", key, res.Error)
	}
	return nil
}

// IdemAnswer is the final answer of the request holding an idempotency
// key, stored by ApplyRefund in the transaction that records the refund's
// new state: one commit instead of two, and the stored answer always
// tells a state the ledger committed. Render makes the answer from the
// refund as that transaction leaves it. After ApplyRefund, Stored reports
// whether the answer was committed (then Status and Body are what was
// stored); if not, the caller stores one itself (FinishIdempotent).
type IdemAnswer struct {
	Scope, Key, Hash string
	Render           func(*Refund) (status int, body []byte)

	Stored bool
	Status int
	Body   []byte
}

func (s *Store) storeAnswer(tx *gorm.DB, a *IdemAnswer, r *Refund) error {
	a.Status, a.Body = a.Render(r)
	return finishIdempotent(tx, a.Scope, a.Key, a.Hash, a.Status, a.Body)
}

// ReleaseIdempotent forgets a key whose request did not start executing
// (refused before anything was recorded), so nothing is kept for it.
// heldUntil is the LockedUntil BeginIdempotent gave the caller: a key
// that already names a refund, or that another request took over (its
// lock ran out; a takeover sets a new locked_until, with the same
// parameters too), is kept.
func (s *Store) ReleaseIdempotent(ctx context.Context, scope, key, hash string, heldUntil time.Time) error {
	err := s.db.WithContext(ctx).Where("scope = ? AND idem_key = ? AND state = ? AND resource_key IS NULL AND request_hash = ? "+
		"AND locked_until = ?", scope, key, IdemInFlight, hash, dbTime(heldUntil)).Delete(&idemRow{}).Error
	if err != nil {
		return fmt.Errorf("release idempotency key %s: %w", key, err)
	}
	return nil
}

// PruneIdempotent deletes up to limit expired keys that name no refund;
// a key that names one is kept as long as the refund (see decideIdempotent).
func (s *Store) PruneIdempotent(ctx context.Context, limit int) (int64, error) {
	var ids []uint64
	db, now := s.db.WithContext(ctx), s.now()
	if err := prunable(db, now).Limit(limit).Pluck("id", &ids).Error; err != nil {
		return 0, fmt.Errorf("find expired idempotency keys: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	res := prunable(db, now).Where("id IN ?", ids).Delete(&idemRow{})
	if res.Error != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// prunable selects the keys PruneIdempotent may delete, through
// idx_idempotency_keys_unlinked: the kept keys (one per refund) are never read.
func prunable(db *gorm.DB, now time.Time) *gorm.DB {
	return db.Model(&idemRow{}).Where("resource_key IS NULL AND expires_at < ?", now)
}
