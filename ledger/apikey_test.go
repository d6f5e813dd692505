package ledger_test

import (
	"context"
	"errors"
	"testing"

	"gorm.io/gorm"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestKeyUseNotRecordedStillPasses: recording a key's last use is
// bookkeeping; a database that refuses the write (read-only during a
// failover, busy) must not refuse a valid key, while a revoked one stays
// refused.
func TestKeyUseNotRecordedStillPasses(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.CreateAPIKey(ctx, "alice", "finance", "hash-alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateAPIKey(ctx, "bob", "finance", "hash-bob"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RevokeAPIKeys(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		err := s.DB().Callback().Update().Before("gorm:update").Register("test:refuse", func(db *gorm.DB) {
			_ = db.AddError(errors.New("read-only"))
		})
		if err != nil {
			t.Fatal(err)
		}
		u := &ledger.KeyUsage{Store: s}
		k, ok, err := u.Lookup(ctx, "hash-alice")
		if err != nil || !ok || k.Name != "alice" {
			t.Fatalf("valid key while its use cannot be recorded: %+v ok=%v err=%v", k, ok, err)
		}
		if _, ok, err := u.Lookup(ctx, "hash-bob"); ok || err != nil {
			t.Fatalf("revoked key: ok=%v err=%v", ok, err)
		}
	})
}
