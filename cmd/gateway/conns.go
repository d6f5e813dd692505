package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"paygateway/gateway"
)

// connShedder keeps the capped public port from being held by idle
// keep-alive connections: when a connection opens with the count at high
// (90% of http.max_connections), and every idleGrace while the count stays
// there (at the cap no connection opens: the listener stops accepting),
// the connections idle for longer than idleGrace are closed. A client busy sending keeps its connections
// (they are idle only between its requests); one that only holds them
// open loses them. Turning keep-alives off for everyone instead, as a
// first version did, made every client pay a new TCP handshake per
// request just when the gateway was busiest, and an overload fed on
// itself. So a client holding connections cannot keep WeChat Pay's
// notifications waiting in the accept queue.
type connShedder struct {
	high int64
	open atomic.Int64

	mu   sync.Mutex
	idle map[net.Conn]time.Time // idle connections, since when
}

// idleGrace is how long a connection may sit idle near the cap.
const idleGrace = 250 * time.Millisecond

func newConnShedder(srv *http.Server, listener string, max int, m *gateway.Metrics) *connShedder {
	c := &connShedder{high: int64(max) * 9 / 10, idle: map[net.Conn]time.Time{}}
	srv.ConnState = c.track
	if m != nil {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_http_open_connections",
			Help:        "Connections open on a port: public (http.max_connections caps them) or notify (http.notify_max_connections).",
			ConstLabels: prometheus.Labels{"listener": listener}},
			func() float64 { return float64(c.open.Load()) }))
	}
	return c
}

// watch sheds idle connections every idleGrace while the count is at
// high, until ctx ends: a client that fills the cap and then lets its
// connections go idle together would otherwise hold them until
// http.idle_timeout, nothing opening to trigger the shedding. As with any
// keep-alive close (the server's own idle timeout and shutdown too), a
// request sent just as its connection is closed is lost to that
// connection: clients retry it (WeChat Pay redelivers), and only
// connections idle for idleGrace near the cap are at risk.
func (c *connShedder) watch(ctx context.Context) {
	t := time.NewTicker(idleGrace)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if c.open.Load() >= c.high {
				c.closeIdle(time.Now().Add(-idleGrace))
			}
		}
	}
}

func (c *connShedder) track(conn net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		if c.open.Add(1) >= c.high {
			c.closeIdle(time.Now().Add(-idleGrace))
		}
	case http.StateIdle:
		c.mu.Lock()
		c.idle[conn] = time.Now()
		c.mu.Unlock()
	case http.StateActive:
		c.forget(conn)
	case http.StateClosed, http.StateHijacked:
		c.forget(conn)
		c.open.Add(-1)
	}
}

func (c *connShedder) forget(conn net.Conn) {
	c.mu.Lock()
	delete(c.idle, conn)
	c.mu.Unlock()
}

// closeIdle closes the connections idle since before; the server sees
// each closed and counts it down.
func (c *connShedder) closeIdle(before time.Time) {
	var stale []net.Conn
	c.mu.Lock()
	for conn, since := range c.idle {
		if since.Before(before) {
			stale = append(stale, conn)
			delete(c.idle, conn)
		}
	}
	c.mu.Unlock()
	for _, conn := range stale {
		_ = conn.Close()
	}
}
