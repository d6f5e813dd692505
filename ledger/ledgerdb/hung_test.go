package ledgerdb

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// silentServer accepts TCP connections and never sends MySQL's greeting,
// as a hung server or a proxy whose backend is gone does.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return "mysql://u:p@tcp(" + ln.Addr().String() + ")/db"
}

// openWithin opens cfg on ctx and fails unless it gives up, with an error
// naming the open, within limit.
func openWithin(t *testing.T, ctx context.Context, cfg Config, limit time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		db, _, err := OpenContext(ctx, cfg)
		if db != nil {
			if sqlDB, derr := db.DB(); derr == nil {
				sqlDB.Close()
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "open mysql") {
			t.Fatalf("err = %v, want an error naming the open", err)
		}
		t.Logf("gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(limit):
		t.Fatalf("OpenContext still waiting for the greeting after %v", limit)
	}
}

// TestOpenStopsWhenCancelled: a start-up told to stop (SIGTERM cancels its
// context) stops waiting for a server that never greets, whatever the
// read timeout (a migration connection's is the migration's limit).
func TestOpenStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(200*time.Millisecond, cancel)
	cfg := Config{DSN: silentServer(t), DialTimeout: time.Hour, ReadTimeout: time.Hour}
	openWithin(t, ctx, cfg, 2*time.Second)
}

// TestOpenBoundedByDialTimeout: without a stop, a server that never greets
// holds the open for the dial timeout, not the read timeout nor the
// caller's (a migration's) deadline.
func TestOpenBoundedByDialTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
	defer cancel()
	cfg := Config{DSN: silentServer(t), DialTimeout: 300 * time.Millisecond, ReadTimeout: time.Hour}
	openWithin(t, ctx, cfg, 2*time.Second)
}
