package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// The refund stage times POST /v1/refunds: orders are paid in the
// simulator (which the refund calls reach) and notified to the gateway,
// then each is refunded once, with a user JWT for its payer and a fresh
// Idempotency-Key: closed loop at the highest concurrency (capacity), then
// open loop at WeChat Pay's per-merchant rate (keeping up).

// refundBody is exactly what POST /v1/refunds accepts.
type refundBody struct {
	OutTradeNo string `json:"out_trade_no"`
	Amount     int64  `json:"amount"`
	Reason     string `json:"reason"`
}

// newRefundRequest builds one refund creation call by the payer of outTradeNo.
func newRefundRequest(ctx context.Context, base, token, key, outTradeNo string, amount int64) (*http.Request, error) {
	body, _ := json.Marshal(refundBody{OutTradeNo: outTradeNo, Amount: amount, Reason: "gwbench"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/refunds", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

func payerOf(outTradeNo string) string { return "oB" + outTradeNo }

// refundStage returns a human-readable outcome (a rate, or why there is
// none), the figures and the ledger check, if any. Only a 201 counts as a
// created refund: a 202 (outcome still unknown) is counted apart.
func refundStage(ctx context.Context, e *env, t *target, p *poster, m *meter, n, c int) (string, *Result, *Check) {
	if n <= 0 {
		return "n/a (disabled with -refunds 0)", nil, nil
	}
	run, err := refundCalls(ctx, e, t, p, "RF", n)
	if err != nil {
		return "error: " + err.Error(), nil, nil
	}
	r := m.measure(func() Result { return closedLoop(n, c, run.op(ctx, t, p)) })
	check := t.ledger.checkRefundRun(ctx, e, "refund creation", run)
	if r.Failed > 0 { // judged NOT met, not left unmeasured
		return fmt.Sprintf("error: %d of %d refund creations not answered 201%s (first: %s)",
			r.Failed, r.N, run.pendingNote(), r.FirstErr), &r, &check
	}
	return fmt.Sprintf("%.0f/s (p50 %s, p99 %s, gateway CPU %s per refund, %d refunds, concurrency %d; CPU per refund: %s)",
		r.Rate(), ms(r.P50), ms(r.P99), us(r.CPUPerOp()), r.N, c, r.Usage.perOp(r.N-r.Failed)), &r, &check
}

// wechatRefundRate is the most refund applications per second WeChat Pay
// accepts from one merchant: the rate the gateway must keep up with.
const wechatRefundRate = 150.0

// refundRateStage offers n refund creations at wechatRefundRate, open
// loop, and returns the outcome: whether the gateway keeps up, and the
// latency a paying user then sees.
func refundRateStage(ctx context.Context, e *env, t *target, p *poster, m *meter, n int) (string, *Result, *Check) {
	if n <= 0 {
		return "n/a (disabled with -refunds 0)", nil, nil
	}
	run, err := refundCalls(ctx, e, t, p, "RO", n)
	if err != nil {
		return "error: " + err.Error(), nil, nil
	}
	r := m.measure(func() Result { return openLoop(n, wechatRefundRate, 4096, run.op(ctx, t, p)) })
	check := t.ledger.checkRefundRun(ctx, e, "refund creation at WeChat Pay's rate", run)
	return fmt.Sprintf("%.0f/s done of %.0f/s offered (p50 %s, p99 %s, gateway CPU %s per refund, %d refunds%s%s)",
		r.Rate(), wechatRefundRate, ms(r.P50), ms(r.P99), us(r.CPUPerOp()), r.N, failNote(r), run.pendingNote()), &r, &check
}

// refundRun is one refund stage's orders and what each one's refund
// call was answered.
type refundRun struct {
	prefix   string   // every order's out_trade_no starts with it
	orders   []string // paid orders, one refund each
	tokens   []string // each order's payer's JWT
	status   []int    // each call's HTTP status (0: no answer)
	refundNo []string // each refund's out_refund_no, from a 201's body
}

// count is how many calls were answered status.
func (r *refundRun) count(status int) int {
	n := 0
	for _, s := range r.status {
		if s == status {
			n++
		}
	}
	return n
}

// pendingNote tells how many calls were answered 202, if any.
func (r *refundRun) pendingNote() string {
	if k := r.count(http.StatusAccepted); k > 0 {
		return fmt.Sprintf("; %d answered 202, outcome unknown, not counted as created", k)
	}
	return ""
}

// refundCalls pays n orders, whose refunds the run's op then creates.
func refundCalls(ctx context.Context, e *env, t *target, p *poster, prefix string, n int) (*refundRun, error) {
	run := &refundRun{prefix: prefix + t.name[:1] + time.Now().Format("150405") + "-",
		tokens: make([]string, n), status: make([]int, n), refundNo: make([]string, n)}
	var err error
	if run.orders, err = paidOrders(ctx, e, p, run.prefix, n); err != nil {
		return nil, fmt.Errorf("preparing paid orders: %w", err)
	}
	for i, no := range run.orders {
		if run.tokens[i], err = e.id.UserToken(payerOf(no), time.Hour); err != nil {
			return nil, err
		}
	}
	return run, nil
}

// op creates the refund of orders[i] as its payer and records the answer.
// Only a 201 succeeds.
func (r *refundRun) op(ctx context.Context, t *target, p *poster) func(i int) error {
	return func(i int) error {
		req, err := newRefundRequest(ctx, t.gw.URL(), r.tokens[i], "K"+r.orders[i], r.orders[i], 10)
		if err != nil {
			return err
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		r.status[i] = resp.StatusCode
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
		}
		var created struct {
			OutRefundNo string `json:"out_refund_no"`
		}
		if err := json.Unmarshal(b, &created); err != nil || created.OutRefundNo == "" {
			return fmt.Errorf("status 201 without an out_refund_no: %.200s", b)
		}
		r.refundNo[i] = created.OutRefundNo
		return nil
	}
}

// paidOrders pays n orders (prefix followed by a number) in the simulator,
// which the refund calls reach, and delivers their notifications to the
// gateway.
func paidOrders(ctx context.Context, e *env, p *poster, prefix string, n int) ([]string, error) {
	orders := make([]string, n)
	notes, err := signAll(ctx, n, func(i int) (wxpaysim.Notification, error) {
		orders[i] = fmt.Sprintf("%s%06d", prefix, i)
		tx, err := e.sim.Pay(ctx, orders[i], 1000, payerOf(orders[i]), true)
		if err != nil {
			return wxpaysim.Notification{}, err
		}
		return e.id.Keys.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now())
	})
	if err != nil {
		return nil, err
	}
	r := closedLoop(n, 16, func(i int) error { return postPatiently(e, p, notes[i]) })
	if r.Failed > 0 {
		return nil, fmt.Errorf("%d payment notifications refused (first: %s)", r.Failed, r.FirstErr)
	}
	return orders, nil
}

// postPatiently delivers a notification, redelivering it freshly signed
// (as WeChat Pay does) for up to about 10 s: the preparation is not
// measured, and right after the overload phase a gateway may still be
// working off its backlog (on SQLite, a checkpoint of a large WAL).
func postPatiently(e *env, p *poster, n wxpaysim.Notification) error {
	err := p.post(n)
	for try := 0; err != nil && try < 5; try++ {
		time.Sleep(2 * time.Second)
		again, serr := n.Resign(e.id.Keys, wxpaysim.PublicKeyMode(), time.Now())
		if serr != nil {
			return serr
		}
		err = p.post(again)
	}
	return err
}
