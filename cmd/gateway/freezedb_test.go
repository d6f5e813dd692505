package main

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// freezeProxy forwards TCP connections to a database server until freeze,
// from when on it passes nothing either way and keeps every connection
// open: a server that hangs mid-conversation (a failover behind a VIP, a
// stalled host), which neither closes the socket nor answers.
type freezeProxy struct {
	target string
	ln     net.Listener
	frozen atomic.Bool
	done   chan struct{}

	mu    sync.Mutex
	conns []net.Conn
}

// newFreezeProxy starts a proxy to target until the test ends.
func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{target: target, ln: ln, done: make(chan struct{})}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// freezeDSN returns a "mysql://" DSN reaching dsn's server through a new
// freezeProxy.
func freezeDSN(t *testing.T, dsn string) (string, *freezeProxy) {
	t.Helper()
	mc, err := mysqldrv.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	p := newFreezeProxy(t, mc.Addr)
	mc.Addr = p.ln.Addr().String()
	return "mysql://" + mc.FormatDSN(), p
}

// freeze stops all traffic, on the open connections and on new ones.
func (p *freezeProxy) freeze() { p.frozen.Store(true) }

func (p *freezeProxy) accept() {
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
		go p.pipe(s, c)
		go p.pipe(c, s)
	}
}

// pipe copies src to dst; once frozen it holds what it read.
func (p *freezeProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen.Load() {
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

func (p *freezeProxy) close() {
	p.ln.Close()
	close(p.done)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
