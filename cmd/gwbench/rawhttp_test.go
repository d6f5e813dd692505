package main

import (
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
