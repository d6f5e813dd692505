package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// The refund storm hits StormOrders paid orders through POST /v1/refunds
// while the faults run. Each order gets stormKeys idempotency keys, each a
// partial refund of 40% + 1 fen, so two fit and the third would exceed the
// paid amount (the money rule must refuse it), unless WeChat Pay closed
// one of the others first: its amount went back, and the third fits.
// Every key is sent StormRepeats times concurrently with the same
// parameters, as a client retrying in parallel would. A request is
// repeated, with the same key, until it gets a final answer: a connection
// error (gateway killed), a 5xx or 409 EIN_FLIGHT means "try again".

const (
	stormKeys     = 3
	stormParallel = 16 // orders stormed at once
	// stormDeadline bounds each order's requests from its first send (not
	// its wait for a turn): a key still without a final answer then is a
	// violation.
	stormDeadline = 2 * time.Minute
	// stormLimit bounds the whole storm (orders wait their turn in waves
	// of stormParallel): an order not started by then was never stormed,
	// which fails the run (a stuck gateway), as an unanswered key does.
	stormLimit = 10 * time.Minute
)

// storm is the outcome of the refund storm.
type storm struct {
	mu      sync.Mutex
	keys    map[string]int             // out_trade_no → distinct idempotency keys used
	answers map[string]map[string]bool // idempotency key → out_refund_no its 2xx/422 answers named
	status  map[string]int             // final answers by status and code, for the report
	sent    int                        // POSTs, retries included
	ok      int                        // final 2xx answers
	unrun   int                        // orders never stormed: stormLimit passed first
	err     error                      // the storm could not run (e.g. no token)
}

// refundBody is exactly what POST /v1/refunds accepts.
type refundBody struct {
	OutTradeNo string `json:"out_trade_no"`
	Amount     int64  `json:"amount"`
	Reason     string `json:"reason"`
}

// refundAnswer is the part of an answer the storm checks.
type refundAnswer struct {
	Code        string `json:"code"`
	OutRefundNo string `json:"out_refund_no"`
	Refund      *struct {
		OutRefundNo string `json:"out_refund_no"`
	} `json:"refund"`
}

func newStorm() *storm {
	return &storm{keys: map[string]int{}, answers: map[string]map[string]bool{}, status: map[string]int{}}
}

// runStorm fires the storm at orders the gateway has accepted so far.
func runStorm(ctx context.Context, w *world, d *driver) *storm {
	s := newStorm()
	ctx, cancel := context.WithTimeout(ctx, stormLimit)
	defer cancel()
	sem := make(chan struct{}, stormParallel)
	var wg sync.WaitGroup
	orders := d.paidSoFar(d.o.StormOrders)
	for i, o := range orders {
		token, err := w.id.UserToken(o.openid(), time.Hour)
		if err != nil {
			s.err = err
			break
		}
		select { // a turn, or the end of the storm's time
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			s.mu.Lock()
			s.unrun = len(orders) - i
			s.mu.Unlock()
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.order(ctx, w, d, o, token)
		})
	}
	wg.Wait()
	return s
}

// order storms one order: every key StormRepeats times, all at once.
func (s *storm) order(ctx context.Context, w *world, d *driver, o *order, token string) {
	ctx, cancel := context.WithTimeout(ctx, stormDeadline)
	defer cancel()
	body, _ := json.Marshal(refundBody{OutTradeNo: o.no, Amount: o.amount*2/5 + 1, Reason: "chaos storm"})
	var wg sync.WaitGroup
	for k := range stormKeys {
		key := fmt.Sprintf("RS-%s-%d", o.no, k)
		s.mu.Lock()
		s.keys[o.no]++
		s.mu.Unlock()
		for range d.o.StormRepeats {
			wg.Go(func() { s.request(ctx, d.client, w.gw.URL(), token, key, body) })
		}
	}
	wg.Wait()
}

// request sends one refund request until it gets a final answer.
func (s *storm) request(ctx context.Context, c *http.Client, base, token, key string, body []byte) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		status, a, err := postRefund(ctx, c, base, token, key, body)
		s.mu.Lock()
		s.sent++
		s.mu.Unlock()
		if err == nil && !retryable(status, a.Code) {
			s.final(key, status, a)
			return
		}
		sleep(ctx, backoff)
		backoff = min(backoff*2, time.Second)
	}
	s.final(key, 0, refundAnswer{Code: "storm deadline"})
}

// retryable answers leave the request to be sent again with the same key:
// the gateway is down or overloaded, or the key's first request is still
// running.
func retryable(status int, code string) bool {
	return status >= 500 || status == http.StatusTooManyRequests ||
		(status == http.StatusConflict && code == "EIN_FLIGHT")
}

func (s *storm) final(key string, status int, a refundAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[fmt.Sprintf("%d %s", status, a.Code)]++
	if status/100 == 2 {
		s.ok++
	}
	no := a.OutRefundNo
	if a.Refund != nil {
		no = a.Refund.OutRefundNo
	}
	if no != "" {
		if s.answers[key] == nil {
			s.answers[key] = map[string]bool{}
		}
		s.answers[key][no] = true
	}
}

func postRefund(ctx context.Context, c *http.Client, base, token, key string, body []byte) (int, refundAnswer, error) {
	var a refundAnswer
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/refunds", bytes.NewReader(body))
	if err != nil {
		return 0, a, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, a, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, a, err
	}
	_ = json.Unmarshal(b, &a) // a non-JSON answer leaves a empty
	return resp.StatusCode, a, nil
}

// summary is the storm's line in the report.
func (s *storm) summary() string {
	if s == nil {
		return "did not run"
	}
	out := fmt.Sprintf("%d POSTs for %d orders × %d keys, %d final 2xx; final answers %v", s.sent, len(s.keys),
		stormKeys, s.ok, s.status)
	if s.unrun > 0 {
		out += fmt.Sprintf("; %d orders never stormed (out of time)", s.unrun)
	}
	if s.err != nil {
		out += "; error: " + s.err.Error()
	}
	return out
}

// answered is how many requests ended with status ("409 ECONFLICT"), 0
// when the storm did not run.
func (s *storm) answered(status string) int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status[status]
}

// keysFor is how many idempotency keys the storm used on order no (0 when
// the storm did not touch it, or did not run).
func (s *storm) keysFor(no string) int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[no]
}
