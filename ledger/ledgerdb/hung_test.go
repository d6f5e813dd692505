package ledgerdb

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
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

// TestOpenBoundedByConnectTimeout: without a stop, a server that never
// greets holds the open for the dial and read timeouts, not the caller's
// (a migration's) deadline.
func TestOpenBoundedByConnectTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
	defer cancel()
	cfg := Config{DSN: silentServer(t), DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}
	openWithin(t, ctx, cfg, 2*time.Second)
}

// slowGreetingProxy forwards to target but holds each connection's first
// answer (the server's greeting) for delay: a healthy but slow server
// (reverse DNS on accept, a loaded thread pool, a far region).
func slowGreetingProxy(t *testing.T, target string, delay time.Duration, conns *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go forwardLate(c, target, delay)
		}
	}()
	return ln.Addr().String()
}

func forwardLate(c net.Conn, target string, delay time.Duration) {
	defer c.Close()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(s, c) }()
	time.Sleep(delay)
	_, _ = io.Copy(c, s)
}

// TestSlowButHealthyServerOpens: each connection's greeting takes longer
// than the dial timeout, within the read timeout, and the open makes two
// (MariaDB 10.11 refuses transaction_isolation; the fallback connects
// again): it opens, as the driver's own timeouts allow. With one bound
// over the whole open it failed.
func TestSlowButHealthyServerOpens(t *testing.T) {
	dsn := os.Getenv("GATEWAY_TEST_MYSQL_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("GATEWAY_TEST_MYSQL_DSN is not set")
		}
		t.Skip("no GATEWAY_TEST_MYSQL_DSN")
	}
	mc, err := mysqldrv.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	mc.Addr = slowGreetingProxy(t, mc.Addr, 700*time.Millisecond, &conns)
	cfg := Config{DSN: "mysql://" + mc.FormatDSN(), DialTimeout: 500 * time.Millisecond, ReadTimeout: 2 * time.Second,
		StatementTimeout: 30 * time.Second}
	db, _, err := OpenContext(context.Background(), cfg)
	if err != nil {
		t.Fatalf("a healthy server greeting in 700 ms (dial timeout 500 ms, read timeout 2 s), %d connections: %v", conns.Load(), err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	if err := sqlDB.Ping(); err != nil {
		t.Fatal(err)
	}
}
