package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// Result is what one timed phase measured.
type Result struct {
	N        int           // operations attempted
	Failed   int           // operations that did not succeed
	FirstErr string        // the first failure, for the report
	Elapsed  time.Duration // wall time of the phase
	P50, P99 time.Duration
	Txns     int           // transactions committed (the new phase's and the grouped ceiling's; 0 if not counted)
	CPU      time.Duration // gateway CPU used during the phase (0 if not measured)
	Usage    Usage         // every measured process's CPU during the phase
}

// Rate is successful operations per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.N-r.Failed) / r.Elapsed.Seconds()
}

// CPUPerOp is gateway CPU per successful operation.
func (r Result) CPUPerOp() time.Duration {
	if ok := r.N - r.Failed; ok > 0 {
		return r.CPU / time.Duration(ok)
	}
	return 0
}

// recorder collects latencies and failures from many goroutines.
type recorder struct {
	mu       sync.Mutex
	lat      []time.Duration
	failed   int
	firstErr string
}

func (rec *recorder) add(d time.Duration, err error) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.lat = append(rec.lat, d)
	if err != nil {
		rec.failed++
		if rec.firstErr == "" {
			rec.firstErr = err.Error()
		}
	}
}

func (rec *recorder) result(elapsed time.Duration) Result {
	slices.Sort(rec.lat)
	r := Result{N: len(rec.lat), Failed: rec.failed, FirstErr: rec.firstErr, Elapsed: elapsed}
	if n := len(rec.lat); n > 0 {
		r.P50 = rec.lat[n*50/100]
		r.P99 = rec.lat[min(n-1, n*99/100)]
	}
	return r
}

// closedLoop runs op(0..n-1) on c workers, each starting its next operation
// as soon as the previous one ends: the throughput the system sustains.
func closedLoop(n, c int, op func(i int) error) Result {
	var next atomic.Int64
	rec := &recorder{lat: make([]time.Duration, 0, n)}
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				err := op(i)
				rec.add(time.Since(t), err)
			}
		})
	}
	wg.Wait()
	return rec.result(time.Since(start))
}

// openLoop starts op(i) at start + i/rate whether or not earlier ones have
// finished (at most maxInFlight at once) and measures latency from the
// scheduled start, so a stall is not hidden by the driver slowing down.
func openLoop(n int, rate float64, maxInFlight int, op func(i int) error) Result {
	rec := &recorder{lat: make([]time.Duration, 0, n)}
	sem := make(chan struct{}, maxInFlight)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := op(i)
			rec.add(time.Since(at), err)
		})
	}
	wg.Wait()
	return rec.result(time.Since(start))
}

// signAll runs sign(0..n-1) on every core; signing is RSA-heavy, so it is
// done before a timed phase, never during. It stops early, with ctx's
// error, once ctx ends: signing a level's 12,000 redeliveries takes the
// machine's every core for seconds, and Ctrl-C must not wait for them.
func signAll(ctx context.Context, n int, sign func(i int) (wxpaysim.Notification, error)) ([]wxpaysim.Notification, error) {
	out := make([]wxpaysim.Notification, n)
	errs := make([]error, runtime.GOMAXPROCS(0))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for errs[w] == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if errs[w] = ctx.Err(); errs[w] == nil {
					out[i], errs[w] = sign(i)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// poster POSTs notifications and treats any 2xx as accepted; it pays
// the refund stages' orders (a notification answered 2xx but not
// recorded then fails its refund), and its client makes the refund calls.
type poster struct {
	client *http.Client
	url    string
}

func newPoster(base string) *poster {
	tr := &http.Transport{MaxIdleConns: 2048, MaxIdleConnsPerHost: 2048, IdleConnTimeout: time.Minute}
	return &poster{client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		url: base + "/v1/wechatpay/notify/payment"}
}

func (p *poster) post(n wxpaysim.Notification) error {
	resp, err := n.Post(context.Background(), p.client, p.url)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return nil
}
