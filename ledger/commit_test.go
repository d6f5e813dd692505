package ledger_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// hangAtCommit forwards connections to a MySQL server and, from the first
// COMMIT a client sends, passes nothing more either way: a server that
// hangs as a transaction commits.
type hangAtCommit struct {
	ln     net.Listener
	target string
	hung   atomic.Bool
	done   chan struct{}
	mu     sync.Mutex
	conns  []net.Conn
}

func newHangAtCommit(t *testing.T, target string) *hangAtCommit {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangAtCommit{ln: ln, target: target, done: make(chan struct{})}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		close(p.done)
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *hangAtCommit) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.pipe(s, c, true)
		go p.pipe(c, s, false)
	}
}

func (p *hangAtCommit) pipe(dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if fromClient && isCommit(buf[:n]) {
			p.hung.Store(true)
		}
		for p.hung.Load() {
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// isCommit: b is the packet of the query COMMIT (COM_QUERY, 0x03), not
// one naming READ-COMMITTED.
func isCommit(b []byte) bool {
	return len(b) == 11 && b[0] == 7 && b[1] == 0 && b[2] == 0 && bytes.Equal(b[4:], []byte("\x03COMMIT"))
}

// TestCommitEndsWithTheContext: a transaction whose COMMIT the server
// never answers ends with its context (an outbox claim's 5 s, a
// notification's deadline), not after the pool's read timeout: database/sql
// sends the COMMIT of Tx.Commit without a context.
func TestCommitEndsWithTheContext(t *testing.T) {
	dsn := ledgertest.MySQLDSN(t)
	mc, err := mysqldrv.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
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
	proxy := newHangAtCommit(t, mc.Addr)
	mc.Addr = proxy.ln.Addr().String()
	// Only the context may end the wait: the read timeout is far off.
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: "mysql://" + mc.FormatDSN(), ReadTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	s := ledger.NewStore(db, dialect)

	cctx, ccancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer ccancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := s.Outbox().Claim(cctx, "w", 1, time.Minute); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the claim committed though the server never answered its COMMIT")
		}
		if !proxy.hung.Load() {
			t.Fatalf("the claim failed before its COMMIT: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("the claim returned after %v, want about its context's 500 ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the claim still waits for its COMMIT 5 s on, with a 500 ms context")
	}
}
