package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// hungDatabase returns a database config naming a server that accepts
// TCP and never sends MySQL's greeting (a hung server, a proxy whose
// backend is gone), with timeouts long enough that only the start-up's
// context can end the wait.
func hungDatabase(t *testing.T) DatabaseConfig {
	t.Helper()
	d := DefaultConfig().Database
	d.DSN = "mysql://u:p@tcp(" + hungRedis(t) + ")/db" // any silent listener
	d.DialTimeout, d.ReadTimeout = time.Minute, time.Hour
	return d
}

// stopsWithin runs start with a context cancelled after 200 ms, as
// SIGTERM or Ctrl-C cancels run's, and fails unless it gives up, with an
// error naming the open, within 2 s.
func stopsWithin(t *testing.T, start func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(200*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() { done <- start(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "open mysql") {
			t.Fatalf("err = %v, want an error naming the open", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("still waiting for the database's greeting 2 s after the stop signal")
	}
}

// TestStartupStopsOnHungDatabase: `gateway migrate` (24 h limit, "Ctrl-C
// stops it") and serve's start-up stop when told to, though the database
// never answers: both the pool's open and the migration connection's.
func TestStartupStopsOnHungDatabase(t *testing.T) {
	t.Run("pool", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Database = hungDatabase(t)
		m := &Main{Config: cfg, MigrateTimeout: 24 * time.Hour}
		defer m.Close()
		stopsWithin(t, m.openStore)
	})
	t.Run("migration", func(t *testing.T) {
		d := hungDatabase(t)
		stopsWithin(t, func(ctx context.Context) error { return applyMigrations(ctx, d, 24*time.Hour) })
	})
}

// TestBadDSNKeepsThePassword: a DSN missing its /db, whose password holds
// a '/', is split by the driver at that '/': its error quoted the part
// before it as a network ("default addr for network 'gw:Zx9k' unknown"),
// and the start's error reaches the log.
func TestBadDSNKeepsThePassword(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Database.DSN = "mysql://gw:Zx9k/Qp3w@tcp(127.0.0.1:1)"
	m := &Main{Config: cfg}
	defer m.Close()
	err := m.openStore(t.Context())
	if err == nil || strings.Contains(err.Error(), "Zx9k") || strings.Contains(err.Error(), "Qp3w") {
		t.Fatalf("err = %v, want a refusal that does not quote the password", err)
	}
}
