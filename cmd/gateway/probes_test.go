package main

import (
	"net/http"
	"testing"
)

// TestProbesAnswerHEAD: a load balancer may check health with HEAD; the
// probes answer it as they answer GET, with no body. Before, HEAD /healthz
// and /readyz were 404 and such a balancer took the gateway for down.
func TestProbesAnswerHEAD(t *testing.T) {
	m := startGateway(t, testConfig(t, backends[0]))
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Head(m.URL() + path)
		if err != nil {
			t.Fatalf("HEAD %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HEAD %s: %d, want 200", path, resp.StatusCode)
		}
	}
}
