package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// TestAdminCommandAuditEndIsBounded: an admin command stopped by Ctrl-C
// while the database hangs still records how it ended, but waits for that
// at most cliAuditFinish, not the pool's read timeout: until the command
// returns, signal.NotifyContext swallows a second Ctrl-C.
func TestAdminCommandAuditEndIsBounded(t *testing.T) {
	dsn, proxy := ledgertest.ProxiedDSN(t, ledgertest.MySQLDSN(t), "")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// The hang would last the read timeout without the bound.
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: dsn, ReadTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	if err := ledger.Migrate(ctx, db, dialect); err != nil {
		t.Fatal(err)
	}
	s := ledger.NewStore(db, dialect)
	defer func(d time.Duration) { cliAuditFinish = d }(cliAuditFinish)
	cliAuditFinish = 300 * time.Millisecond

	cmdCtx, interrupt := context.WithCancel(t.Context())
	stopped := errors.New("interrupted")
	done := make(chan error, 1)
	var began time.Time
	go func() {
		done <- audited(cmdCtx, s, "apikey create", "role=ops name=x", func() error {
			proxy.Hang() // the database hangs, and the operator presses Ctrl-C
			interrupt()
			began = time.Now()
			return stopped
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, stopped) {
			t.Fatalf("err = %v, want the command's own", err)
		}
		if d := time.Since(began); d > 3*time.Second {
			t.Fatalf("the audit entry's end took %v, want about cliAuditFinish (%v)", d, cliAuditFinish)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command still waits for its audit entry's end 10 s after Ctrl-C")
	}
}
