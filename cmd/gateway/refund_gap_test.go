package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestRefundsOfOneOrderAreSpaced: WeChat Pay (here the simulator, with
// its gap shortened to 1 s) answers FREQUENCY_LIMITED to a refund of an
// order sent within the gap of the order's last. Three refunds of one
// order asked for at once: the first goes out (201), the others are
// recorded unsent and answered 202, and the janitor sends them one gap
// apart. WeChat refuses none, each is sent once, and a retry of a key
// then learns its refund's outcome.
func TestRefundsOfOneOrderAreSpaced(t *testing.T) {
	const simGap, orderGap = time.Second, 1500 * time.Millisecond
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			opts := wxpaysim.Options{RefundSettleDelay: -1, NotifyRetryDelays: []time.Duration{}, RefundGap: simGap}
			e := startRefundEnvSim(t, b, opts, func(c *Config) { c.Refunds.OrderGap = orderGap })
			no := e.pay(t, "o-gap", 100)
			tok := token(t, "o-gap")
			keys := []string{"gap-a", "gap-b", "gap-c"}
			want := []int{201, 202, 202}
			refundNos := make([]string, len(keys))
			for i, key := range keys {
				a := e.refund(t, tok, key, refundBody(no, 10))
				m := a.json(t)
				if a.status != want[i] {
					t.Fatalf("refund %s: %d %s, want %d", key, a.status, a.body, want[i])
				}
				if i > 0 && (m["state"] != "CREATED" || m["attempts"] != 0.0 || m["next_check_at"] == nil) {
					t.Fatalf("refund %s: %s; want CREATED, no attempt, sent at next_check_at", key, a.body)
				}
				refundNos[i], _ = m["out_refund_no"].(string)
			}
			if n := len(simRefundsOf(e.sim, no)); n != 1 {
				t.Fatalf("WeChat Pay got %d refunds of the order at once, want 1", n)
			}
			deadline := time.Now().Add(15 * time.Second)
			for len(simRefundsOf(e.sim, no)) < len(keys) && time.Now().Before(deadline) {
				e.m.Refunds.Sweep(context.Background(), 10)
				time.Sleep(50 * time.Millisecond)
			}
			sent := simRefundsOf(e.sim, no)
			if len(sent) != len(keys) {
				t.Fatalf("WeChat Pay has %d of the %d refunds after 15 s of janitor sweeps", len(sent), len(keys))
			}
			for i := 1; i < len(sent); i++ {
				if gap := sent[i].CreateTime.Sub(sent[i-1].CreateTime); gap < simGap {
					t.Errorf("refunds %s and %s applied %v apart, want at least %v", sent[i-1].OutRefundNo, sent[i].OutRefundNo, gap, simGap)
				}
			}
			if refused := e.sim.RefundsRefused()["order_gap"]; refused != 0 {
				t.Errorf("WeChat Pay refused %d applications as too soon after the order's last", refused)
			}
			for i, rno := range refundNos {
				if r := ledgerRefund(t, e.m, rno); r.State != "PROCESSING" || r.Attempts != 1 {
					t.Errorf("refund %s: %s after %d attempts, want PROCESSING after 1", rno, r.State, r.Attempts)
				}
				if a := e.refund(t, tok, keys[i], refundBody(no, 10)); a.status != 201 || a.json(t)["out_refund_no"] != rno {
					t.Errorf("retry of %s: %d %s, want 201 naming %s", keys[i], a.status, a.body, rno)
				}
			}
		})
	}
}

// simRefundsOf lists the refunds WeChat Pay applied to an order, in the
// order they were applied.
func simRefundsOf(sim *wxpaysim.Sim, outTradeNo string) []wxpaysim.RefundRecord {
	var out []wxpaysim.RefundRecord
	for _, r := range sim.Refunds() {
		if r.OutTradeNo == outTradeNo {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b wxpaysim.RefundRecord) int { return a.CreateTime.Compare(b.CreateTime) })
	return out
}
