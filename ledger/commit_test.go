package ledger_test

import (
	"context"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// hungAt returns a store whose server hangs from the first time a client
// sends query; only a context can end the wait (the read timeout is 20 s).
func hungAt(t *testing.T, query string) (*ledger.Store, *hanging) {
	t.Helper()
	dsn := ledgertest.MySQLDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	setup, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.Migrate(ctx, setup, dialect); err != nil {
		t.Fatal(err)
	}
	if sqlDB, err := setup.DB(); err == nil {
		sqlDB.Close()
	}
	proxied, proxy := ledgertest.ProxiedDSN(t, dsn, query)
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: proxied, ReadTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return ledger.NewStore(db, dialect), &hanging{proxy, query}
}

// hanging is a proxy and the query it hangs at.
type hanging struct {
	*ledgertest.Proxy
	query string
}

// endsWithin runs call with a 500 ms context and fails unless it returns
// an error within 3 s, after the proxy hung.
func endsWithin(t *testing.T, proxy *hanging, call func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- call(ctx) }()
	select {
	case err := <-done:
		if !proxy.Hung() {
			t.Fatalf("returned before the server hung at %s: %v", proxy.query, err)
		}
		if err == nil && proxy.query == "COMMIT" {
			t.Fatal("committed though the server never answered its COMMIT")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("returned after %v, want about its context's 500 ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("still waits for its %s 5 s on, with a 500 ms context", proxy.query)
	}
}

// TestCommitEndsWithTheContext: a transaction whose COMMIT the server
// never answers ends with its context (an outbox claim's 5 s, a
// notification's deadline), not after the pool's read timeout: database/sql
// sends the COMMIT of Tx.Commit without a context.
func TestCommitEndsWithTheContext(t *testing.T) {
	s, proxy := hungAt(t, "COMMIT")
	endsWithin(t, proxy, func(ctx context.Context) error {
		_, err := s.Outbox().Claim(ctx, "w", 1, time.Minute)
		return err
	})
}

// TestRollbackEndsWithTheContext: so does one that the server never lets
// roll back (a refusal, here an unknown anomaly, ends it).
func TestRollbackEndsWithTheContext(t *testing.T) {
	s, proxy := hungAt(t, "ROLLBACK")
	endsWithin(t, proxy, func(ctx context.Context) error {
		_, err := s.ResolveAnomaly(ctx, 424242, "ops:x", "n/a")
		return err
	})
}
