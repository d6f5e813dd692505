package main

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestJobsStopWhenShutdownBegins: background jobs (outbox workers, the
// janitor) are told to stop as soon as shutdown begins, not after the
// HTTP requests have drained, so no new attempt starts during the drain
// and the one under way keeps the whole shutdown timeout.
func TestJobsStopWhenShutdownBegins(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.HTTP.ReadTimeout = 3 * time.Second
	m, err := NewMain(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	stopped := make(chan time.Time, 1)
	m.AddJob(func(ctx context.Context) { <-ctx.Done(); stopped <- time.Now() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitReady(t, m.URL())

	// A request still in flight: its body has not all arrived.
	conn, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", paymentPath)
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case <-stopped:
	case <-done:
		t.Fatal("Run returned before the jobs were told to stop")
	case <-time.After(2 * time.Second):
		t.Fatal("jobs not told to stop while a request was still draining")
	}
	select {
	case <-done:
		t.Fatal("Run returned while a request was still in flight")
	default:
	}
	conn.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
