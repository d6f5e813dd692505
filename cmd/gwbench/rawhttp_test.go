package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestRawPosterOutlivesTheServersIdleTimeout: a connection kept alive
// across a pause longer than the server's idle timeout (as while a large
// phase's requests are signed) is not reused; the next request succeeds
// on a new one instead of failing with EOF.
func TestRawPosterOutlivesTheServersIdleTimeout(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.IdleTimeout = 100 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	p, err := newRawPoster(srv.URL, "/x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	p.maxIdle = 50 * time.Millisecond
	req := []byte("POST /x HTTP/1.1\r\nHost: " + p.host + "\r\nContent-Length: 0\r\n\r\n")
	for i := range 3 {
		if err := p.send(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		time.Sleep(300 * time.Millisecond) // the server closes the idle connection meanwhile
	}
}

// TestRawPosterTakesTheLatestConnection: a request goes on the most
// recently used kept-alive connection, as net/http's Transport does;
// when even that one idled past maxIdle, every kept one is closed and a
// new one dialled.
func TestRawPosterTakesTheLatestConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	p, err := newRawPoster(srv.URL, "/x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	oldest, _ := net.Pipe()
	older, _ := net.Pipe()
	latest, _ := net.Pipe()
	now := time.Now()
	p.idle = []*rawConn{{c: oldest, idleSince: now.Add(-3 * time.Second)}, {c: older, idleSince: now.Add(-2 * time.Second)},
		{c: latest, idleSince: now}}
	if c, err := p.conn(); err != nil || c.c != latest {
		t.Fatalf("took %v (%v), want the most recently used connection", c, err)
	}
	p.maxIdle = time.Second
	c, err := p.conn()
	if err != nil || c.c == older || c.c == oldest {
		t.Fatalf("took %v (%v), want a new connection: the kept ones idled past maxIdle", c, err)
	}
	defer c.c.Close()
	if len(p.idle) != 0 {
		t.Fatalf("%d stale connections kept, want none", len(p.idle))
	}
	if _, err := oldest.Write([]byte("x")); err == nil {
		t.Fatal("a stale connection was left open")
	}
}
