package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRateLimitConfig(t *testing.T) {
	t.Setenv("GATEWAY_RATE_LIMIT_LEDGER_PER_MINUTE", "7")
	t.Setenv("GATEWAY_RATE_LIMIT_REFUNDS_BURST", "2")
	cfg, err := Load("../../configs/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.RateLimit.limits()
	if l.Ledger.PerMinute != 7 || l.Refunds.Burst != 2 || l.Orders.PerMinute != defaultRateLimit().OrdersPerMinute {
		t.Fatalf("limits = %+v", l)
	}
	cfg.RateLimit.OrdersBurst = -1
	if err := cfg.RateLimit.validate(); err == nil || !strings.Contains(err.Error(), "rate_limit.orders_burst") {
		t.Fatalf("validate = %v, want it to name rate_limit.orders_burst", err)
	}
}

// TestConnectionsAreCapped: with http.max_connections 2, two connections
// busy with a request (its headers still arriving) take the cap; a third
// is not served (it waits in the accept queue) until one of them closes.
func TestConnectionsAreCapped(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.MaxConnections = 2
	m := startGateway(t, cfg)
	var open []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	for _, c := range open[:2] {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n"); err != nil { // headers not finished
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // both accepted first
	third := bufio.NewReader(open[2])
	_ = open[2].SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := io.WriteString(open[2], "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := http.ReadResponse(third, nil); err == nil {
		t.Fatal("a third connection was served past a cap of 2")
	}
	open[0].Close()
	_ = open[2].SetDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(third, nil)
	if err != nil {
		t.Fatalf("the waiting connection after one closed: %v", err)
	}
	resp.Body.Close()
}

// TestIdleConnectionsAreShedNearTheCap: near http.max_connections the
// gateway closes connections idle for a while, so a client that only
// holds connections open cannot fill the cap; new connections are then
// served.
func TestIdleConnectionsAreShedNearTheCap(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.MaxConnections = 10 // shed when the 9th opens
	m := startGateway(t, cfg)
	served := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	var idle []net.Conn
	for i := 0; i < 9; i++ {
		if i == 8 {
			time.Sleep(idleGrace + 50*time.Millisecond) // the others have been idle a while
		}
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := served(c); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	_ = idle[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("an idle connection near the cap was kept open: read err = %v, want EOF", err)
	}
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if err := served(c); err != nil {
			t.Fatalf("new connection %d after shedding: %v", i, err)
		}
		c.Close()
	}
	if f := metricFamily(t, m, "gateway_http_open_connections"); f == nil {
		t.Fatal("no gateway_http_open_connections gauge")
	}
}

// TestIdleConnectionsAtTheCapAreShed: a client opens every connection the
// cap allows, then sends one request on each, so that all go idle
// together and no connection is left to open: they are still shed (not
// held until http.idle_timeout), and a new connection is served.
func TestIdleConnectionsAtTheCapAreShed(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.MaxConnections = 10
	m := startGateway(t, cfg)
	var held []net.Conn
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // all ten accepted, none idle yet
	for i, c := range held {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		resp.Body.Close()
	}
	c, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a new connection while idle ones filled the cap: %v", err)
	}
	resp.Body.Close()
}

// TestBusyConnectionsKeepAliveNearTheCap: near the cap, connections busy
// with a request are not made to close after their answer: a client that
// keeps sending gets its answers on the same connection, without a new
// handshake each (turning keep-alives off for everyone made an overload
// feed on itself).
func TestBusyConnectionsKeepAliveNearTheCap(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.MaxConnections = 10 // near the cap from 9 open
	m := startGateway(t, cfg)
	holdBusy(t, m.Addr(), 8)
	time.Sleep(100 * time.Millisecond) // let the server read them
	c, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("request %d on the busy client's connection: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatalf("request %d answered with Connection: close near the cap", i)
		}
	}
}

// TestSlowClientsAreCutOff: a client that never finishes its headers
// (slowloris), one that never sends the body it announced, and a kept-alive
// connection left idle are each closed by the server after its timeout,
// not held: every one of them would otherwise keep a connection of the
// capped listener for good.
func TestSlowClientsAreCutOff(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.ReadHeaderTimeout, cfg.HTTP.ReadTimeout, cfg.HTTP.IdleTimeout = 300*time.Millisecond, time.Second, 500*time.Millisecond
	m := startGateway(t, cfg)
	for _, tc := range []struct {
		name, send string
		bound      time.Duration // the timeout, with room for a loaded machine
	}{
		{"headers never finished", "POST " + paymentPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: app", 5 * time.Second},
		{"body never sent", "POST " + paymentPath + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"id\":", 6 * time.Second},
		{"idle after an answer", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", m.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(tc.send)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = c.SetReadDeadline(start.Add(tc.bound))
			_, err = io.ReadAll(c) // whatever the server answers, then its close
			if err != nil {
				t.Fatalf("connection still open after %v: %v", time.Since(start), err)
			}
		})
	}
}

// TestNotificationListener: with http.notify_addr set, API clients holding
// every connection of the public port (cap 2) do not keep WeChat Pay out:
// a notification sent to the notification port is recorded. That port
// serves nothing but the notifications and the health checks, and the
// public port still serves notifications (orders keep their notify_url).
// Stopping the gateway closes both.
func TestNotificationListener(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.MaxConnections, cfg.HTTP.NotifyAddr = 2, "127.0.0.1:0"
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	notifyURL := "http://" + m.NotifyAddr()
	waitReady(t, notifyURL)
	k, _ := testKeys(t)
	first := uniqueNo("pub")
	if status, body := post(t, m.URL()+paymentPath, good(t, k, first)); status != 204 {
		t.Fatalf("notification on the public port: status=%d body=%v", status, body)
	}
	holdBusy(t, m.Addr(), 2) // the public port's cap
	no := uniqueNo("sep")
	if status, body := post(t, notifyURL+paymentPath, good(t, k, no)); status != 204 {
		t.Fatalf("notification on the notification port with the public one full: status=%d body=%v", status, body)
	}
	if got := ledgerCounts(t, m, no); got != [3]int64{1, 1, 1} {
		t.Fatalf("payments/history/notifications = %v, want [1 1 1]", got)
	}
	for _, path := range []string{"/v1/ledger/payments/" + no, "/metrics", "/v1/wechatpay/notify/../../v1/ledger/payments/" + no} {
		if status, body := apiCall(t, "GET", notifyURL+path, financeKey, nil); status != 404 || body["code"] != "ENOTFOUND" {
			t.Fatalf("GET %s on the notification port: status=%d body=%v, want 404 ENOTFOUND", path, status, body)
		}
	}
	if f := metricFamily(t, m, "gateway_http_open_connections"); len(f.GetMetric()) != 2 {
		t.Fatalf("gateway_http_open_connections = %v, want one series per listener", f)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if c, err := net.DialTimeout("tcp", m.NotifyAddr(), time.Second); err == nil {
		c.Close()
		t.Fatal("the notification port still accepts connections after the gateway stopped")
	}
}

// holdBusy opens n connections to addr, each busy with a request whose
// headers never end, until the test ends.
func holdBusy(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRiskyFramingClosesTheConnection: a request whose framing a proxy
// may read otherwise than Go is answered and its connection closed (RFC 9112
// §6.1: "the server MUST close the connection after responding to such a
// request"): one framed by chunks that also carries a Content-Length, and
// an HTTP/1.0 one with a Transfer-Encoding (Go frames it by its
// Content-Length; a proxy, by its chunks). The bytes a proxy in front took
// for the body, read here as a request of their own, would be a request
// it never sent, smuggled past it: the connection ends before them.
func TestRiskyFramingClosesTheConnection(t *testing.T) {
	m := startGateway(t, testConfig(t, backends[0]))
	smuggled := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	last := "0\r\n\r\n"
	size := fmt.Sprintf("%x\r\n", len(smuggled)) // a chunk holding the smuggled request
	for _, tc := range []struct{ name, proto, headers, body string }{
		{"chunked with a Content-Length", "HTTP/1.1",
			fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(last+smuggled)), last + smuggled},
		{"chunked after a Content-Length", "HTTP/1.1",
			fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: %d\r\n", len(last+smuggled)), last + smuggled},
		{"HTTP/1.0 with a Transfer-Encoding", "HTTP/1.0",
			fmt.Sprintf("Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n", len(size)),
			size + smuggled + "\r\n" + last},
		// Without a Content-Length net/http reads it as bodiless: the
		// chunks a proxy sent after it are read as the next request.
		{"HTTP/1.0 with a Transfer-Encoding alone", "HTTP/1.0",
			"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n", size + smuggled + "\r\n" + last},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", m.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			req := "POST " + paymentPath + " " + tc.proto + "\r\nHost: x\r\nContent-Type: application/json\r\n" + tc.headers + "\r\n" + tc.body
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("the request: %v", err)
			}
			resp.Body.Close()
			if !resp.Close {
				t.Errorf("answered %s without Connection: close", resp.Status)
			}
			if resp, err := http.ReadResponse(br, nil); err == nil {
				resp.Body.Close()
				t.Fatalf("the bytes a proxy took for the body were served as a request: %s", resp.Status)
			} else if isTimeout(err) {
				t.Fatalf("connection still open after the answer: %v", err)
			}
		})
	}
}
