package inventory_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway/inventory"
	"paygateway/gateway/inventory/inventorysim"
)

// blackhole forwards TCP connections to target until frozen: from then on
// the connections it holds stay open but carry nothing either way (a peer
// or a middlebox gone without a FIN or an RST); new ones forward again.
type blackhole struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []*atomic.Bool // per connection
	open   []net.Conn     // both ends of each, closed with the test
	opened atomic.Int32
}

func startBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	t.Cleanup(func() {
		_ = ln.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.open {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.opened.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			frozen := new(atomic.Bool)
			b.mu.Lock()
			b.frozen, b.open = append(b.frozen, frozen), append(b.open, c, up)
			b.mu.Unlock()
			go pipe(up, c, frozen)
			go pipe(c, up, frozen)
		}
	}()
	return b
}

// pipe copies src to dst, dropping what it reads once frozen.
func pipe(dst io.Writer, src io.Reader, frozen *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *blackhole) freeze() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.frozen {
		f.Store(true)
	}
}

// TestDeadHTTP2ConnectionIsDropped: over https the client speaks HTTP/2,
// every call on one connection. When that connection dies silently (no
// FIN, no RST: a peer or a NAT gone), calls time out on it, and the
// client drops it after an unanswered ping and opens another. Before, it
// kept sending every stock confirmation and release down the dead
// connection, each timing out, until the OS gave up on it (minutes with
// data unacknowledged).
func TestDeadHTTP2ConnectionIsDropped(t *testing.T) {
	defer inventory.SetHTTP2Health(200*time.Millisecond, 200*time.Millisecond)()
	sim := inventorysim.New()
	var h2 atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2.Add(1)
		}
		sim.Handler().ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hole := startBlackhole(t, srv.Listener.Addr().String())
	c := inventory.New(inventory.Config{BaseURL: "https://" + hole.ln.Addr().String(), Timeout: time.Second})
	inventory.TrustOnly(c, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	ctx := context.Background()
	if err := c.Confirm(ctx, inventory.Confirmation{Key: "h2-1", OutTradeNo: "T1", AmountTotal: 100}); err != nil {
		t.Fatal(err)
	}
	if h2.Load() != 1 {
		t.Fatal("the call did not go over HTTP/2")
	}
	hole.freeze()
	if err := c.Confirm(ctx, inventory.Confirmation{Key: "h2-2", OutTradeNo: "T2", AmountTotal: 100}); !inventory.IsUnknown(err) {
		t.Fatalf("confirm on a dead connection: %v, want an unknown outcome", err)
	}
	// Each call is bounded by its 1 s timeout: 8 are far more than the
	// 0.4 s a dead connection takes to be found out.
	var err error
	for i := range 8 {
		cf := inventory.Confirmation{Key: fmt.Sprintf("h2-after-%d", i), OutTradeNo: "T3", AmountTotal: 100}
		if _, err = c.ConfirmationDone(ctx, cf); err == nil {
			return
		}
	}
	t.Fatalf("all 8 calls after the connection died failed (%d connections opened), the last: %v", hole.opened.Load(), err)
}
