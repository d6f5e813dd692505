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

// hangingProxy forwards connections to a MySQL server and, from the first
// query a client sends that is query (COMMIT, ROLLBACK), passes nothing
// more either way: a server that hangs as a transaction ends.
type hangingProxy struct {
	query  string
	ln     net.Listener
	target string
	hung   atomic.Bool
	done   chan struct{}
	mu     sync.Mutex
	conns  []net.Conn
}

func newHangingProxy(t *testing.T, target, query string) *hangingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangingProxy{query: query, ln: ln, target: target, done: make(chan struct{})}
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

func (p *hangingProxy) accept() {
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

func (p *hangingProxy) pipe(dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if fromClient && isQuery(buf[:n], p.query) {
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

// isQuery: b is the packet of query alone (COM_QUERY, 0x03), not one
// naming it (READ-COMMITTED).
func isQuery(b []byte, query string) bool {
	n := len(query) + 1
	return len(b) == 4+n && b[0] == byte(n) && b[1] == 0 && b[2] == 0 && bytes.Equal(b[4:], []byte("\x03"+query))
}

// hungAt returns a store whose server hangs from the first time a client
// sends query; only a context can end the wait (the read timeout is 20 s).
func hungAt(t *testing.T, query string) (*ledger.Store, *hangingProxy) {
	t.Helper()
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
	proxy := newHangingProxy(t, mc.Addr, query)
	mc.Addr = proxy.ln.Addr().String()
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: "mysql://" + mc.FormatDSN(), ReadTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return ledger.NewStore(db, dialect), proxy
}

// endsWithin runs call with a 500 ms context and fails unless it returns
// an error within 3 s, after the proxy hung.
func endsWithin(t *testing.T, proxy *hangingProxy, call func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- call(ctx) }()
	select {
	case err := <-done:
		if !proxy.hung.Load() {
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
