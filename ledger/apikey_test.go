package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// TestOneActiveKeyPerName: operators creating keys of one name at the
// same moment get one key; the others are refused as a conflict, and a
// reused hash as already recorded. Revoking the name frees it.
func TestOneActiveKeyPerName(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const n = 12
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.CreateAPIKey(ctx, "carol", "finance", fmt.Sprintf("hash-carol-%d", i))
			}()
		}
		wg.Wait()
		created := 0
		for i, err := range errs {
			switch {
			case err == nil:
				created++
			case !errors.Is(err, ledger.ErrConflict):
				t.Errorf("create %d: %v, want a conflict", i, err)
			}
		}
		if created != 1 {
			t.Fatalf("%d active keys named carol, want 1", created)
		}
		if _, err := s.CreateAPIKey(ctx, "erin", "finance", "hash-erin"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateAPIKey(ctx, "frank", "finance", "hash-erin"); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("a reused hash: %v, want already recorded", err)
		}
		if _, err := s.CreateAPIKey(ctx, "erin", "finance", "hash-erin"); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("a reused hash for an active name: %v, want a conflict", err)
		}
		if _, err := s.RevokeAPIKeys(ctx, "carol"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateAPIKey(ctx, "carol", "finance", "hash-carol-new"); err != nil {
			t.Fatalf("a revoked name again: %v", err)
		}
	})
}
