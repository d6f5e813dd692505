package ledgertest

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// Proxy forwards TCP connections to a MySQL server until it hangs: from
// then on it passes nothing either way and keeps every connection open,
// a server that neither answers nor closes (a failover behind a VIP, a
// stalled host). It hangs when told (Hang) or, if at is set, from the
// first time a client sends the query at alone (COMMIT, ROLLBACK).
type Proxy struct {
	target string
	at     string
	ln     net.Listener
	hung   atomic.Bool
	done   chan struct{}

	mu    sync.Mutex
	conns []net.Conn
}

// ProxiedDSN returns a "mysql://" DSN reaching dsn's server through a new
// Proxy that hangs at query at ("": only when told), closed with the test.
func ProxiedDSN(t *testing.T, dsn, at string) (string, *Proxy) {
	t.Helper()
	mc, err := mysqldrv.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: mc.Addr, at: at, ln: ln, done: make(chan struct{})}
	go p.accept()
	t.Cleanup(p.close)
	mc.Addr = ln.Addr().String()
	return "mysql://" + mc.FormatDSN(), p
}

// Hang stops all traffic, on the open connections and on new ones.
func (p *Proxy) Hang() { p.hung.Store(true) }

// Hung reports whether the proxy hangs.
func (p *Proxy) Hung() bool { return p.hung.Load() }

func (p *Proxy) accept() {
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

// pipe copies src to dst; once hung it holds what it read.
func (p *Proxy) pipe(dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if fromClient && p.at != "" && isQuery(buf[:n], p.at) {
			p.Hang()
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

func (p *Proxy) close() {
	p.ln.Close()
	close(p.done)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
