package main

import (
	"context"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// lagBuffer is refunds.safety_buffer in TestRefundQueryLag, and queryLag
// WeChat Pay's refund query lag: shorter, as the gateway's waits assume,
// yet longer than the first call's timeout, so the query right after it
// does not find the refund. Each gap is seconds wide, for the race-enabled
// suite on a loaded machine: the query after the call comes 3 s or more
// before the lag ends, and the janitor's 2 s or more after it (with 3 s
// and 2 s a query that came late found the refund, as in the chaos run).
// lagCall is refunds.call_timeout: under lagBuffer, as Check wants, and
// long enough that the ledger writes before the call leave the query time.
const (
	lagBuffer = 6 * time.Second
	queryLag  = 4 * time.Second
	lagCall   = 5 * time.Second
)

// TestRefundQueryLag: WeChat Pay's refund queries lag its applications. A
// refund applied whose answer timed out, and one applied whose answer a
// proxy replaced with an unsigned 403, are not found by the query right
// after the call: the request answers 202 UNKNOWN and concludes nothing.
// The janitor asks a safety buffer later, past the lag, and finds each:
// both end SUCCESS, executed once under their first out_refund_no, never
// sent again and never FAILED, and the order's refunded total is theirs.
func TestRefundQueryLag(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // its own gateway, simulator, database and Redis prefix; mostly waiting
			e := startRefundEnv(t, b, func(c *Config) {
				c.WechatPay.Timeout = time.Second // under HoldFor, over a loaded machine's healthy call
				c.Refunds.CallTimeout = lagCall
				c.Refunds.SafetyBuffer = lagBuffer
				c.Refunds.Recheck = 300 * time.Millisecond
				c.Refunds.JanitorInterval = 100 * time.Millisecond
			})
			faults := []wxpaysim.Faults{{ApplyThenTimeoutNext: 1, HoldFor: 2 * time.Second}, {ApplyThenForbiddenNext: 1}}
			refunds := map[string]string{} // out_refund_no → out_trade_no
			for _, f := range faults {
				no, rno := lateRefund(t, e, f)
				refunds[rno] = no
			}
			waitLedger(t, e.m, refunds, ledger.RefundProcessing)
			if n := e.sim.SettleRefunds(); n != len(refunds) {
				t.Fatalf("settled %d refunds at WeChat Pay, want %d", n, len(refunds))
			}
			waitLedger(t, e.m, refunds, ledger.RefundSuccess)
			for rno, no := range refunds {
				checkRefund(t, e.m.Store, no, ledger.RefundSuccess, 1, 60)
				checkPaidOnce(t, e.sim, no, rno)
				checkNeverFailed(t, e.m, no, rno)
			}
		})
	}
}

// lateRefund pays a new order and refunds 60 fen of it while WeChat Pay
// suffers f and queries lag queryLag; the request must leave the refund
// UNKNOWN (202) after its query met the lag. It returns the order's and
// the refund's numbers.
func lateRefund(t *testing.T, e *refundEnv, f wxpaysim.Faults) (string, string) {
	t.Helper()
	no := e.pay(t, "o-lag", 100)
	f.PathPrefix, f.RefundQueryLag = "/v3/refund/domestic/refunds", queryLag
	e.sim.SetFaults(f)
	lagged := e.sim.FaultsInjected()["query_lag"]
	a := e.refund(t, token(t, "o-lag"), "lag-"+no, refundBody(no, 60))
	got := a.json(t)
	rno, _ := got["out_refund_no"].(string)
	if a.status != 202 || got["state"] != "UNKNOWN" {
		t.Fatalf("refund with %+v: %d %s, want 202 UNKNOWN", f, a.status, a.body)
	}
	if n := e.sim.FaultsInjected()["query_lag"]; n <= lagged {
		t.Fatalf("refund with %+v: the query after the call found the refund (query_lag %d); the lag was not met", f, n)
	}
	return no, rno
}

// waitLedger waits for every refund in refunds to be in state.
func waitLedger(t *testing.T, m *Main, refunds map[string]string, state ledger.RefundState) {
	t.Helper()
	for rno := range refunds {
		waitFor(t, 3*lagBuffer, "refund "+rno+" "+string(state), func() bool {
			return ledgerRefund(t, m, rno).State == state
		})
	}
}

// checkPaidOnce wants WeChat Pay to hold one refund of order no, rno, got
// and executed once.
func checkPaidOnce(t *testing.T, sim *wxpaysim.Sim, no, rno string) {
	t.Helper()
	var mine []wxpaysim.RefundRecord
	for _, r := range sim.Refunds() {
		if r.OutTradeNo == no {
			mine = append(mine, r)
		}
	}
	if len(mine) != 1 || mine[0].OutRefundNo != rno || mine[0].Requests != 1 || sim.RefundCount(rno) != 1 {
		t.Fatalf("WeChat Pay's refunds of %s: %+v; want %s alone, sent and executed once", no, mine, rno)
	}
}

// checkNeverFailed wants refund rno's history to go through UNKNOWN (the
// lag was waited out) to SUCCESS, never FAILED.
func checkNeverFailed(t *testing.T, m *Main, no, rno string) {
	t.Helper()
	history, err := m.Store.History(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	var path []string
	failed, unknown := false, false
	for _, h := range history {
		if h.Entity == ledger.EntityRefund && h.EntityKey == rno {
			path = append(path, h.From+"→"+h.To)
			failed = failed || h.To == string(ledger.RefundFailed)
			unknown = unknown || h.To == string(ledger.RefundUnknown)
		}
	}
	if failed {
		t.Fatalf("refund %s was FAILED on the way: %v", rno, path)
	}
	if !unknown {
		t.Fatalf("refund %s never UNKNOWN: %v", rno, path)
	}
}
