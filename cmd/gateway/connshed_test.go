package main

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// pipeConn is one end of an in-memory connection; the other end is
// closed with the test.
func pipeConn(t *testing.T) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}

// closed reports whether conn was closed on our side.
func closed(conn net.Conn) bool {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Millisecond))
	_, err := conn.Write([]byte("x"))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestConnectionServingARequestIsNotShed: a connection that was idle and
// then began a request is no longer idle; shedding near the cap closes
// only the connections still idle, never one in the middle of a request
// (a payment notification being committed).
func TestConnectionServingARequestIsNotShed(t *testing.T) {
	c := newConnShedder(&http.Server{}, "public", 10, nil)
	busy, idle := pipeConn(t), pipeConn(t)
	for _, conn := range []net.Conn{busy, idle} {
		c.track(conn, http.StateNew)
		c.track(conn, http.StateIdle)
	}
	c.track(busy, http.StateActive)
	c.closeIdle(time.Now().Add(time.Hour)) // every idle connection counts as stale
	if closed(busy) {
		t.Fatal("a connection serving a request was shed as idle")
	}
	if !closed(idle) {
		t.Fatal("an idle connection was not shed")
	}
}

// TestClosedConnectionsAreCountedDown: connections that close leave the
// count; a count that only grew would hold the shedder at the cap for
// good, closing every kept-alive connection of every client.
func TestClosedConnectionsAreCountedDown(t *testing.T) {
	c := newConnShedder(&http.Server{}, "public", 10, nil)
	for range 12 {
		conn := pipeConn(t)
		c.track(conn, http.StateNew)
		c.track(conn, http.StateActive)
		c.track(conn, http.StateClosed)
	}
	hijacked := pipeConn(t)
	c.track(hijacked, http.StateNew)
	c.track(hijacked, http.StateHijacked)
	if n := c.open.Load(); n != 0 {
		t.Fatalf("%d connections counted open after all closed, want 0", n)
	}
}
