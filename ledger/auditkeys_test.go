package ledger_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestAuditTargetNotesOneEntry: noting what a request acts on (a
// reconciliation's day) writes its own audit entry only. Were the entry's
// id dropped from the update, every past entry would name that day: the
// audit log rewritten by one request.
func TestAuditTargetNotesOneEntry(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		earlier, err := s.BeginAudit(ctx, ledger.AuditEntry{Principal: "fin1", Role: "finance", Method: "GET", Path: "/v1/ledger/payments"})
		if err != nil {
			t.Fatal(err)
		}
		run, err := s.BeginAudit(ctx, ledger.AuditEntry{Principal: "ops1", Role: "ops", Method: "POST", Path: "/v1/reconciliations"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.NoteAuditTarget(ctx, run, "date=2025-01-15"); err != nil {
			t.Fatal(err)
		}
		log, err := s.AuditLog(ctx, 10)
		if err != nil || len(log) != 2 {
			t.Fatalf("audit log: %+v %v", log, err)
		}
		for _, e := range log {
			want := map[uint64]string{earlier: "", run: "date=2025-01-15"}[e.ID]
			if e.Target != want {
				t.Errorf("entry %d (%s) has target %q, want %q", e.ID, e.Path, e.Target, want)
			}
		}
	})
}

// TestRevokingARevokedNameChangesNothing: revoking a name whose keys are
// all revoked already is "not found", and the time each was revoked stays
// the first one: an operator can tell when a leaked key stopped working.
func TestRevokingARevokedNameChangesNothing(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		first := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
		if _, err := s.CreateAPIKey(ctx, "dave", "finance", "hash-dave"); err != nil {
			t.Fatal(err)
		}
		if n, err := s.WithClock(func() time.Time { return first }).RevokeAPIKeys(ctx, "dave"); err != nil || n != 1 {
			t.Fatalf("revoke: %d %v", n, err)
		}
		later := s.WithClock(func() time.Time { return first.Add(24 * time.Hour) })
		if n, err := later.RevokeAPIKeys(ctx, "dave"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("second revoke: %d %v, want ErrNotFound", n, err)
		}
		keys, err := s.APIKeys(ctx)
		if err != nil || len(keys) != 1 || keys[0].RevokedAt == nil || !keys[0].RevokedAt.Equal(first) {
			t.Fatalf("keys after a second revoke: %+v %v, want revoked at %v", keys, err, first)
		}
	})
}

// TestKeyUseIsRecordedAgainAfterEvery: a key's last use is written at
// most once per Every, and again once Every has passed: operators read it
// to tell a key still in use from one safe to revoke.
func TestKeyUseIsRecordedAgainAfterEvery(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		var mu sync.Mutex
		now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
		at := s.WithClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
		step := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
		if _, err := at.CreateAPIKey(ctx, "erin", "finance", "hash-erin"); err != nil {
			t.Fatal(err)
		}
		u := &ledger.KeyUsage{Store: at, Every: time.Minute}
		lastUsed := func() time.Time {
			t.Helper()
			if _, ok, err := u.Lookup(ctx, "hash-erin"); !ok || err != nil {
				t.Fatalf("lookup: ok=%v err=%v", ok, err)
			}
			keys, err := s.APIKeys(ctx)
			if err != nil || len(keys) != 1 || keys[0].LastUsedAt == nil {
				t.Fatalf("keys: %+v %v", keys, err)
			}
			return keys[0].LastUsedAt.UTC()
		}
		start := now
		if got := lastUsed(); !got.Equal(start) {
			t.Fatalf("first use recorded as %v, want %v", got, start)
		}
		step(30 * time.Second)
		if got := lastUsed(); !got.Equal(start) {
			t.Fatalf("a use within the minute rewrote the last use: %v, want %v", got, start)
		}
		step(time.Minute)
		if got := lastUsed(); !got.Equal(start.Add(90 * time.Second)) {
			t.Fatalf("a use past the minute recorded as %v, want %v", got, start.Add(90*time.Second))
		}
	})
}
