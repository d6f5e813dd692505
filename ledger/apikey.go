package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"
)

// APIKey is a key created with `gateway apikey create`. Only the SHA-256
// of the key is stored; the key itself is shown once, at creation.
type APIKey struct {
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

type apiKeyRow struct {
	ID         uint64 `gorm:"primaryKey"`
	Name       string
	Role       string
	KeyHash    string
	CreatedAt  time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
}

func (apiKeyRow) TableName() string { return "api_keys" }

func (r apiKeyRow) key() APIKey {
	return APIKey{Name: r.Name, Role: r.Role, CreatedAt: r.CreatedAt.UTC(), RevokedAt: utcPtr(r.RevokedAt),
		LastUsedAt: utcPtr(r.LastUsedAt)}
}

// CreateAPIKey stores the hash of a new key. A name with an active key
// gives ErrConflict (revoke it first); a reused hash gives ErrAlreadyRecorded.
// One active key per name is a unique key (uk_api_keys_active_name), so
// two operators creating one name at once cannot both succeed.
func (s *Store) CreateAPIKey(ctx context.Context, name, role, keyHash string) (APIKey, error) {
	db := s.db.WithContext(ctx)
	for attempt := 0; ; attempt++ {
		row := apiKeyRow{Name: name, Role: role, KeyHash: keyHash, CreatedAt: s.now()}
		err := db.Create(&row).Error
		if err == nil {
			return row.key(), nil
		}
		if !errors.Is(err, gorm.ErrDuplicatedKey) {
			return APIKey{}, fmt.Errorf("create api key %s: %w", name, err)
		}
		// Which unique key: an active key of this name, or the hash.
		var n int64
		if cerr := db.Model(&apiKeyRow{}).Where("name = ? AND revoked_at IS NULL", name).Count(&n).Error; cerr != nil {
			return APIKey{}, fmt.Errorf("create api key %s: %w (name or hash taken; checking which: %v)", name, err, cerr)
		}
		switch {
		case n > 0:
			return APIKey{}, fmt.Errorf("create api key %s: %w", name, ErrConflict)
		case attempt > 0: // the name is free: the hash is taken
			return APIKey{}, fmt.Errorf("create api key %s: %w", name, ErrAlreadyRecorded)
		} // the name's key was revoked since the insert: try once more
	}
}

// RevokeAPIKeys revokes every active key named name and returns how many
// it revoked; none gives ErrNotFound.
func (s *Store) RevokeAPIKeys(ctx context.Context, name string) (int64, error) {
	res := s.db.WithContext(ctx).Model(&apiKeyRow{}).Where("name = ? AND revoked_at IS NULL", name).
		Update("revoked_at", s.now())
	if res.Error != nil {
		return 0, fmt.Errorf("revoke api key %s: %w", name, res.Error)
	}
	if res.RowsAffected == 0 {
		return 0, fmt.Errorf("revoke api key %s: %w", name, ErrNotFound)
	}
	return res.RowsAffected, nil
}

// APIKeys lists every key, revoked ones included, oldest first.
func (s *Store) APIKeys(ctx context.Context) ([]APIKey, error) {
	var rows []apiKeyRow
	if err := s.db.WithContext(ctx).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	out := make([]APIKey, len(rows))
	for i, r := range rows {
		out[i] = r.key()
	}
	return out, nil
}

// KeyUsage looks up active keys by hash and records when each was last
// used, writing at most once per Every per key so that a busy key does not
// add a write to every request.
type KeyUsage struct {
	Store *Store
	Every time.Duration // default one minute

	mu   sync.Mutex
	seen map[uint64]time.Time
}

// Lookup returns the active key with this SHA-256 hex; ok is false for an
// unknown or revoked key.
func (u *KeyUsage) Lookup(ctx context.Context, keyHash string) (APIKey, bool, error) {
	var row apiKeyRow
	err := u.Store.db.WithContext(ctx).Where("key_hash = ? AND revoked_at IS NULL", keyHash).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return APIKey{}, false, nil
	}
	if err != nil {
		return APIKey{}, false, fmt.Errorf("look up api key: %w", err)
	}
	if err := u.touch(ctx, row.ID); err != nil { // bookkeeping: the key is valid all the same
		slog.WarnContext(ctx, "api key use not recorded", "name", row.Name, "err", err)
	}
	return row.key(), true, nil
}

func (u *KeyUsage) touch(ctx context.Context, id uint64) error {
	every := u.Every
	if every <= 0 {
		every = time.Minute
	}
	now := u.Store.now()
	u.mu.Lock()
	if u.seen == nil {
		u.seen = map[uint64]time.Time{}
	}
	last, ok := u.seen[id]
	if ok && now.Sub(last) < every {
		u.mu.Unlock()
		return nil
	}
	u.seen[id] = now
	u.mu.Unlock()
	err := u.Store.db.WithContext(ctx).Model(&apiKeyRow{}).Where("id = ?", id).Update("last_used_at", now).Error
	if err != nil {
		return fmt.Errorf("record api key use: %w", err)
	}
	return nil
}
