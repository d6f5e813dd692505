package main

import (
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"paygateway/ledger/ledgertest"
)

// TestStalledStderrDoesNotBlockRequests runs the binary with its stderr
// a pipe nobody reads, as when a log collector stops: once the pipe and
// the log queue are full, requests are still answered at once, the lines
// the log could not take are counted in /metrics, and SIGTERM still ends
// the process. Before the log had a queue, the first request past the
// pipe's 64 KiB blocked in its access log line, and with it the gateway.
func TestStalledStderrDoesNotBlockRequests(t *testing.T) {
	bin := buildGateway(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(instanceEnv(t, ledgertest.SQLiteDSN(t), "", ""), "GATEWAY_HTTP_ADDR="+addr,
		"GATEWAY_LOG_LEVEL=info", "GATEWAY_HTTP_DRAIN_DELAY=0s")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close() // the child holds the only writer; nobody reads r
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	base := "http://" + addr
	waitReady(t, base)
	flood(t, base+"/healthz", 12000) // > 8,192 queued lines + 64 KiB of pipe
	if got := scrape(t, base, "gateway_log_lines_dropped_total"); got == 0 {
		t.Fatal("gateway_log_lines_dropped_total = 0 after a flood into a stalled stderr")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not stop on SIGTERM with its stderr stalled")
	}
}

// flood sends n GETs to url from 8 clients; each must be answered 200
// within 2 s.
func flood(t *testing.T, url string, n int) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var wg sync.WaitGroup
	var once sync.Once
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				resp, err := client.Get(url)
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					once.Do(func() { t.Errorf("request %d: %v (status %v)", i, err, resp) })
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}
