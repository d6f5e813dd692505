package main

import (
	"bufio"
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

// TestConnectionsAreCapped: with http.max_connections 2, two open
// keep-alive connections take the cap; a third is not served (it waits
// in the accept queue) until one of them closes.
func TestConnectionsAreCapped(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.MaxConnections = 2
	m := startGateway(t, cfg)
	get := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	var open []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	for i, c := range open[:2] {
		if err := get(c); err != nil {
			t.Fatalf("connection %d within the cap: %v", i, err)
		}
	}
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
