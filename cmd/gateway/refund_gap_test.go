package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
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
			t.Parallel() // its own gateway, simulator, database and Redis prefix; mostly waiting
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
				if s, _ := strconv.Atoi(a.header.Get("Retry-After")); (i > 0) != (s >= 1) {
					t.Fatalf("refund %s: %d with Retry-After %q; want one (whole seconds) on a waiting refund only",
						key, a.status, a.header.Get("Retry-After"))
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

// TestWaitingRefundIsSentByTheJanitorOnly: a refund that waits for its
// order's gap spends none of the merchant's call quota (the quota's one
// call went to the first refund, and the second is still taken), is not
// sent by its request nor by a retry of its key (answered 202 with the
// refund as it is), and the janitor sends it once the gap ends without
// asking WeChat Pay about it first (nothing was sent to ask about).
func TestWaitingRefundIsSentByTheJanitorOnly(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("waiting-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){
			func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) { return processing(req.OutRefundNo) }}}
		quota := gateway.Limit{PerMinute: 1, Burst: 1}
		cfg := gateway.RefundConfig{Calls: gateway.NewMemoryLimiter(), CallLimit: quota}
		svc := gateway.NewRefundService(cfg, s, api, gateway.NewMemoryLocker())
		if a, err := svc.Create(ctx, "o-resend", "k1-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil || a.Status != 201 {
			t.Fatalf("first refund: %+v %v, want 201", a, err)
		}
		params := gateway.RefundParams{OutTradeNo: no, Amount: 30}
		for _, replay := range []bool{false, true} {
			a, err := svc.Create(ctx, "o-resend", "k2-"+no, params)
			if err != nil || a.Status != 202 || a.Replayed != replay {
				t.Fatalf("second refund (retry %v): %+v %v, want 202", replay, a, err)
			}
			// The default gap, 80 s (a minute, the 15 s call timeout, 5 s),
			// less the moments since the first refund; no janitor runs here.
			if a.RetryAfter < 70*time.Second || a.RetryAfter > 80*time.Second {
				t.Fatalf("second refund (retry %v): Retry-After %v, want the rest of the 80 s gap", replay, a.RetryAfter)
			}
		}
		waiting := secondRefund(t, s, no)
		if waiting.State != ledger.RefundCreated || waiting.Attempts != 0 {
			t.Fatalf("second refund %s after %d attempts, want CREATED, none", waiting.State, waiting.Attempts)
		}
		if n := svc.Sweep(ctx, 10); n != 0 {
			t.Fatalf("janitor checked %d refunds before the gap ended, want none", n)
		}
		// The gap ends: the janitor (a fresh limiter: the minute passed)
		// sends it, and only it.
		api.mu.Lock()
		api.creates = append(api.creates, func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) { return processing(req.OutRefundNo) })
		api.mu.Unlock()
		if err := s.DB().Exec("UPDATE payments SET refund_sent_at = ? WHERE out_trade_no = ?", time.Now().UTC().Add(-2*time.Minute), no).Error; err != nil {
			t.Fatal(err)
		}
		if err := s.DB().Exec("UPDATE refunds SET next_check_at = ? WHERE out_refund_no = ?", time.Now().UTC().Add(-time.Second), waiting.OutRefundNo).Error; err != nil {
			t.Fatal(err)
		}
		fresh := gateway.NewRefundService(gateway.RefundConfig{Calls: gateway.NewMemoryLimiter(), CallLimit: quota}, s, api, gateway.NewMemoryLocker())
		if n := fresh.Sweep(ctx, 10); n != 1 {
			t.Fatalf("janitor checked %d refunds, want 1", n)
		}
		if r := secondRefund(t, s, no); r.State != ledger.RefundProcessing || r.Attempts != 1 {
			t.Fatalf("second refund %s after %d attempts, want PROCESSING after 1", r.State, r.Attempts)
		}
		if a, err := svc.Create(ctx, "o-resend", "k2-"+no, params); err != nil || a.Status != 201 {
			t.Fatalf("retry of the second refund's key: %+v %v, want 201 now", a, err)
		}
	})
}

// secondRefund returns the order's second refund.
func secondRefund(t *testing.T, s *ledger.Store, no string) ledger.Refund {
	t.Helper()
	refunds, err := s.Refunds(context.Background(), no)
	if err != nil || len(refunds) != 2 {
		t.Fatalf("refunds of %s: %+v, %v; want two", no, refunds, err)
	}
	return refunds[1]
}
