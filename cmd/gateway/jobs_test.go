package main

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestAPanickingJobDoesNotEndTheGateway: a background job that panics is
// started again after its pause, and the gateway goes on serving
// meanwhile; a job that returns is not started again.
func TestAPanickingJobDoesNotEndTheGateway(t *testing.T) {
	var runs, returned atomic.Int32
	again := make(chan struct{})
	m := startGatewayWith(t, testConfig(t, backends[0]), func(m *Main) {
		m.jobRestart = 20 * time.Millisecond
		m.AddJob(func(ctx context.Context) {
			if runs.Add(1) == 1 {
				var rows map[string]int
				rows["a row nobody foresaw"]++ // panics: a nil map
			}
			close(again)
			<-ctx.Done()
		})
		m.AddJob(func(context.Context) { returned.Add(1) })
	})
	select {
	case <-again:
	case <-time.After(10 * time.Second):
		t.Fatalf("the job did not start again after its panic (%d runs)", runs.Load())
	}
	resp, err := http.Get(m.URL() + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz after the panic: %v %v", resp, err)
	}
	resp.Body.Close()
	time.Sleep(100 * time.Millisecond)
	if n := returned.Load(); n != 1 {
		t.Fatalf("a job that returned ran %d times, want once", n)
	}
}
