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
// none) and the figures, if any.
func refundStage(ctx context.Context, e *env, t *target, p *poster, m *meter, n, c int) (string, *Result) {
	if n <= 0 {
		return "n/a (disabled with -refunds 0)", nil
	}
	op, err := refundCalls(ctx, e, t, p, "RF", n)
	if err != nil {
		return "error: " + err.Error(), nil
	}
	r := m.measure(func() Result { return closedLoop(n, c, op) })
	if r.Failed > 0 { // judged NOT met, not left unmeasured
		return fmt.Sprintf("error: %d of %d refund creations failed (first: %s)", r.Failed, r.N, r.FirstErr), &r
	}
	return fmt.Sprintf("%.0f/s (p50 %s, p99 %s, gateway CPU %s per refund, %d refunds, concurrency %d; CPU per refund: %s)",
		r.Rate(), ms(r.P50), ms(r.P99), us(r.CPUPerOp()), r.N, c, r.Usage.perOp(r.N-r.Failed)), &r
}

// wechatRefundRate is the most refund applications per second WeChat Pay
// accepts from one merchant: the rate the gateway must keep up with.
const wechatRefundRate = 150.0

// refundRateStage offers n refund creations at wechatRefundRate, open
// loop, and returns the outcome: whether the gateway keeps up, and the
// latency a paying user then sees.
func refundRateStage(ctx context.Context, e *env, t *target, p *poster, m *meter, n int) (string, *Result) {
	if n <= 0 {
		return "n/a (disabled with -refunds 0)", nil
	}
	op, err := refundCalls(ctx, e, t, p, "RO", n)
	if err != nil {
		return "error: " + err.Error(), nil
	}
	r := m.measure(func() Result { return openLoop(n, wechatRefundRate, 4096, op) })
	return fmt.Sprintf("%.0f/s done of %.0f/s offered (p50 %s, p99 %s, gateway CPU %s per refund, %d refunds%s)",
		r.Rate(), wechatRefundRate, ms(r.P50), ms(r.P99), us(r.CPUPerOp()), r.N, failNote(r)), &r
}

// refundCalls pays n orders and returns the call that refunds the i-th
// as its payer.
func refundCalls(ctx context.Context, e *env, t *target, p *poster, prefix string, n int) (func(i int) error, error) {
	orders, err := paidOrders(ctx, e, p, prefix+t.name[:1], n)
	if err != nil {
		return nil, fmt.Errorf("preparing paid orders: %w", err)
	}
	tokens := make([]string, n)
	for i, no := range orders {
		if tokens[i], err = e.id.UserToken(payerOf(no), time.Hour); err != nil {
			return nil, err
		}
	}
	return refundOp(ctx, t, p, tokens, orders), nil
}

// refundOp creates the refund of orders[i] as its payer.
func refundOp(ctx context.Context, t *target, p *poster, tokens, orders []string) func(i int) error {
	return func(i int) error {
		req, err := newRefundRequest(ctx, t.gw.URL(), tokens[i], "K"+orders[i], orders[i], 10)
		if err != nil {
			return err
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		return nil
	}
}

// paidOrders pays n orders in the simulator (which the refund calls reach)
// and delivers their notifications to the gateway.
func paidOrders(ctx context.Context, e *env, p *poster, prefix string, n int) ([]string, error) {
	stamp := time.Now().Format("150405")
	orders := make([]string, n)
	notes, err := signAll(ctx, n, func(i int) (wxpaysim.Notification, error) {
		orders[i] = fmt.Sprintf("%s%s%06d", prefix, stamp, i)
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
