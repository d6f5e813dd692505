package main

import (
	"net/http"
	"os"
	"sync"
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
	t.Cleanup(func() { r.Close() }) // after the process stops: a closed pipe would end it with SIGPIPE
	addr := freeAddr(t)
	env := append(instanceEnv(t, ledgertest.SQLiteDSN(t), "", ""), "GATEWAY_LOG_LEVEL=info", "GATEWAY_HTTP_DRAIN_DELAY=0s")
	p := startProcessTo(t, bin, env, 0, addr, w) // at the end: SIGTERM, and a clean exit within 20 s
	w.Close()                                    // the child holds the only writer; nobody reads r
	waitReady(t, p.url())
	flood(t, p.url()+"/healthz", 12000) // > 8,192 queued lines + 64 KiB of pipe
	if got := scrape(t, p.url(), "gateway_log_lines_dropped_total"); got == 0 {
		t.Fatal("gateway_log_lines_dropped_total = 0 after a flood into a stalled stderr")
	}
}

// flood sends n GETs to url from 8 clients; each must be answered 200
// within 10 s. A request blocked on the log never is; the flood itself
// took 30-46 s under a loaded race-enabled suite, where a request held
// up for 2 s by the machine (the bound before) is not the bug sought.
func flood(t *testing.T, url string, n int) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
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
