package main

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"paygateway/gateway"
)

// connShedder keeps the capped public port from being held by idle
// keep-alive connections: once the open connections reach high (90% of
// http.max_connections) it turns keep-alives off, which closes the idle
// ones and each other after its answer, and turns them back on when the
// count falls to low (half the cap). A client that only holds connections
// open cannot keep WeChat Pay's notifications waiting in the accept queue.
type connShedder struct {
	srv       *http.Server
	high, low int64
	open      atomic.Int64

	mu       sync.Mutex
	shedding bool
}

func newConnShedder(srv *http.Server, max int, m *gateway.Metrics) *connShedder {
	c := &connShedder{srv: srv, high: int64(max) * 9 / 10, low: int64(max) / 2}
	srv.ConnState = c.track
	if m != nil {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_http_open_connections",
			Help: "Connections open on the public port (http.max_connections caps them)."},
			func() float64 { return float64(c.open.Load()) }))
	}
	return c
}

func (c *connShedder) track(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		if c.open.Add(1) >= c.high {
			c.shed(true)
		}
	case http.StateClosed, http.StateHijacked:
		if c.open.Add(-1) <= c.low {
			c.shed(false)
		}
	}
}

func (c *connShedder) shed(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shedding == on {
		return
	}
	c.shedding = on
	c.srv.SetKeepAlivesEnabled(!on)
}
