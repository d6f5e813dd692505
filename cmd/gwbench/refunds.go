package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// The refund stage is pluggable. It probes POST /v1/refunds: while the
// refunds feature is not merged the route answers 404 and the stage reports
// "n/a (refunds not merged)" instead of a number. Once it exists the stage
// pays orders through the simulator and times refund creation.
//
// LEAD: when the refunds branch is merged, align newRefundRequest with its
// API (path, body, how a caller authenticates: JWT) — that is the only
// function that knows the API's shape.

// refundsMerged reports whether the gateway serves POST /v1/refunds.
func refundsMerged(ctx context.Context, client *http.Client, base string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/refunds", bytes.NewReader([]byte("{}")))
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode != http.StatusNotFound, nil
}

// newRefundRequest builds one refund creation call. The bearer token comes
// from GWBENCH_REFUND_TOKEN when set (a JWT the refunds feature accepts);
// otherwise the service API key is sent.
func newRefundRequest(ctx context.Context, e *env, base, outTradeNo, outRefundNo string, amount int64) (*http.Request, error) {
	body, _ := json.Marshal(map[string]any{"out_trade_no": outTradeNo, "out_refund_no": outRefundNo,
		"amount": amount, "reason": "gwbench"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/refunds", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", outRefundNo)
	if tok := os.Getenv("GWBENCH_REFUND_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	} else {
		req.Header.Set("X-Api-Key", e.id.APIKeys["service"])
	}
	return req, nil
}

// refundStage returns a human-readable outcome: a rate, or why there is none.
func refundStage(ctx context.Context, e *env, t *target, p *poster, n, c int) string {
	if n <= 0 {
		return "n/a (disabled with -refunds 0)"
	}
	merged, err := refundsMerged(ctx, p.client, t.gw.URL())
	if err != nil {
		return "error: " + err.Error()
	}
	if !merged {
		return "n/a (refunds not merged)"
	}
	orders, err := paidOrders(ctx, e, p, t.name, n)
	if err != nil {
		return "error preparing paid orders: " + err.Error()
	}
	r := closedLoop(n, c, func(i int) error {
		req, err := newRefundRequest(ctx, e, t.gw.URL(), orders[i], fmt.Sprintf("R%s", orders[i]), 10)
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
	})
	if r.Failed > 0 {
		return fmt.Sprintf("error: %d of %d refund creations failed (first: %s)", r.Failed, r.N, r.FirstErr)
	}
	return fmt.Sprintf("%.0f/s (p50 %s, p99 %s, %d refunds, concurrency %d)", r.Rate(), ms(r.P50), ms(r.P99), r.N, c)
}

// paidOrders pays n orders in the simulator (which the refund calls reach)
// and delivers their notifications to the gateway.
func paidOrders(ctx context.Context, e *env, p *poster, tag string, n int) ([]string, error) {
	stamp := time.Now().Format("150405")
	orders := make([]string, n)
	notes, err := signAll(n, func(i int) (wxpaysim.Notification, error) {
		orders[i] = fmt.Sprintf("RF%s%s%06d", tag[:1], stamp, i)
		tx, err := e.sim.Pay(ctx, orders[i], 1000, "", true)
		if err != nil {
			return wxpaysim.Notification{}, err
		}
		return e.id.Keys.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now())
	})
	if err != nil {
		return nil, err
	}
	r := closedLoop(n, 16, func(i int) error { return p.post(notes[i]) })
	if r.Failed > 0 {
		return nil, fmt.Errorf("%d payment notifications refused (first: %s)", r.Failed, r.FirstErr)
	}
	return orders, nil
}
