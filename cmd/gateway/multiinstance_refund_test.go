package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// refundTry is one refund request's end: an answer, or the transport
// error of an instance that died under it.
type refundTry struct {
	status      int
	code        string
	outRefundNo string
	err         error
	inFlight    int // answers EIN_FLIGHT before this one (retryRefund)
}

// tryRefund asks base for a refund of amount under key, as the order's payer.
func tryRefund(t *testing.T, base string, o paidOrder, key string, amount int64) refundTry {
	raw, _ := json.Marshal(refundBody(o.no, amount))
	req, _ := http.NewRequest("POST", base+"/v1/refunds", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token(t, o.openid))
	req.Header.Set("Idempotency-Key", key)
	resp, err := httpClient.Do(req)
	if err != nil {
		return refundTry{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Code        string `json:"code"`
		OutRefundNo string `json:"out_refund_no"`
	}
	_ = json.Unmarshal(b, &body)
	return refundTry{status: resp.StatusCode, code: body.Code, outRefundNo: body.OutRefundNo}
}

// retryRefund asks again while the answer is "in flight" or "unavailable",
// as a client told to retry with the same key would, and returns the
// first other answer.
func retryRefund(t *testing.T, base string, o paidOrder, key string, amount int64) refundTry {
	deadline := time.Now().Add(40 * time.Second)
	held := 0
	for {
		r := tryRefund(t, base, o, key, amount)
		again := r.err == nil && (r.code == "EIN_FLIGHT" || r.status == http.StatusServiceUnavailable)
		if !again || time.Now().After(deadline) {
			r.inFlight = held
			return r
		}
		if r.code == "EIN_FLIGHT" {
			held++
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// refundThroughACrash has instance 0 ask WeChat Pay for one refund per
// order (60 of 100 fen, key "A-<order>"); WeChat Pay applies each but
// never answers, and instance 0 dies (SIGKILL) waiting. Each user then
// retries the same key at the two other instances, twice each and at
// once, while a second key asks for another 60. Every retry of key A must
// end 201 or 202 naming the one refund WeChat Pay holds, which WeChat Pay
// was asked for once (the instance taking the key over queries before it
// sends), and every request under key B is refused for exceeding what is
// left.
func (w *multiWorld) refundThroughACrash(t *testing.T, orders []paidOrder) {
	w.wx.SetFaults(wxpaysim.Faults{PathPrefix: "/v3/refund/", ApplyThenTimeoutNext: len(orders), HoldFor: 20 * time.Second})
	var first sync.WaitGroup
	dead := w.procs[0].url()
	for _, o := range orders {
		first.Add(1)
		go func() {
			defer first.Done()
			if r := tryRefund(t, dead, o, "A-"+o.no, 60); r.err == nil {
				t.Errorf("%s: instance 0 answered %d %s before it was killed; want it to die waiting on WeChat Pay", o.no, r.status, r.code)
			}
		}()
	}
	waitFor(t, 20*time.Second, "WeChat Pay to apply every refund", func() bool { return len(w.wx.Refunds()) == len(orders) })
	w.procs[0].kill(t)
	first.Wait()
	w.restart(t, 0) // it takes no part in the retries, only in the cleanup
	w.retryAcrossInstances(t, orders)
}

// retryAcrossInstances fires the retries of key A and the competing key B
// at instances 1 and 2 at once, and checks every answer. Until the
// killed instance's hold on key A runs out (in_flight), retries are told
// EIN_FLIGHT; then one instance takes the key over, finds the refund at
// WeChat Pay by querying, and answers with it.
func (w *multiWorld) retryAcrossInstances(t *testing.T, orders []paidOrder) {
	type result struct {
		o   paidOrder
		key string
		r   refundTry
	}
	results := make(chan result, len(orders)*6)
	var wg sync.WaitGroup
	start := make(chan struct{})
	ask := func(o paidOrder, key string, base string, try func(*testing.T, string, paidOrder, string, int64) refundTry) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results <- result{o, key, try(t, base, o, key+"-"+o.no, 60)}
		}()
	}
	for _, o := range orders {
		for _, p := range w.procs[1:] {
			ask(o, "A", p.url(), retryRefund)
			ask(o, "A", p.url(), retryRefund)
			ask(o, "B", p.url(), retryRefund)
		}
	}
	close(start)
	wg.Wait()
	close(results)
	held := w.refundsAtWeChat(t, orders)
	inFlight := 0
	for res := range results {
		r, want := res.r, held[res.o.no]
		if res.key == "A" {
			inFlight += r.inFlight
		}
		switch {
		case r.err != nil:
			t.Errorf("%s key %s: %v", res.o.no, res.key, r.err)
		case res.key == "A" && ((r.status != 201 && r.status != 202) || r.outRefundNo != want):
			t.Errorf("%s retry of key A: %d %s %q, want 201 or 202 naming %s", res.o.no, r.status, r.code, r.outRefundNo, want)
		case res.key == "B" && (r.status != 409 || r.code != "ECONFLICT"):
			t.Errorf("%s key B: %d %s, want 409 ECONFLICT (exceeds what is left)", res.o.no, r.status, r.code)
		}
	}
	if inFlight == 0 { // the dead instance's hold on its keys outlives it by design
		t.Error("no retry of key A was told EIN_FLIGHT while the killed instance's hold lasted")
	}
}

// refundsAtWeChat wants one refund per order at WeChat Pay, asked for
// once and paid once, and returns each order's out_refund_no.
func (w *multiWorld) refundsAtWeChat(t *testing.T, orders []paidOrder) map[string]string {
	held := map[string]string{}
	for _, r := range w.wx.Refunds() {
		if prev, ok := held[r.OutTradeNo]; ok {
			t.Errorf("%s: two refunds at WeChat Pay, %s and %s", r.OutTradeNo, prev, r.OutRefundNo)
		}
		held[r.OutTradeNo] = r.OutRefundNo
		if r.Requests != 1 || r.Executed > 1 || r.Amount != 60 {
			t.Errorf("%s at WeChat Pay: %d create calls, executed %d, amount %d; want 1, at most 1, 60",
				r.OutRefundNo, r.Requests, r.Executed, r.Amount)
		}
	}
	if len(held) != len(orders) {
		t.Errorf("refunds at WeChat Pay for %d orders, want %d", len(held), len(orders))
	}
	return held
}

// checkRefundedOnce waits for every refund to settle, then wants the
// ledger to agree with WeChat Pay (one SUCCESS refund of 60 per order,
// refunded_total 60) and the stock released once per order.
func (w *multiWorld) checkRefundedOnce(t *testing.T, orders []paidOrder) {
	waitFor(t, 30*time.Second, "every refund to settle", func() bool {
		var open int
		err := w.sqlDB.QueryRow("SELECT COUNT(*) FROM refunds WHERE state <> 'SUCCESS'").Scan(&open)
		return err == nil && open == 0
	})
	held := w.refundsAtWeChat(t, orders)
	for _, o := range orders {
		var n int
		var no string
		var amount, total int64
		err := w.sqlDB.QueryRow(`SELECT COUNT(*), MAX(r.out_refund_no), SUM(r.amount), MAX(p.refunded_total)
			FROM refunds r JOIN payments p ON p.out_trade_no = r.out_trade_no WHERE r.out_trade_no = ?`, o.no).Scan(&n, &no, &amount, &total)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 || no != held[o.no] || amount != 60 || total != 60 {
			t.Errorf("%s in the ledger: %d refunds (%s), amount %d, refunded_total %d; want 1 (%s), 60, 60",
				o.no, n, no, amount, total, held[o.no])
		}
	}
	waitFor(t, 30*time.Second, "the releases to drain", func() bool {
		var left int
		err := w.sqlDB.QueryRow("SELECT COUNT(*) FROM outbox_jobs WHERE state <> 'DONE'").Scan(&left)
		return err == nil && left == 0
	})
	for _, o := range orders {
		if n := w.inv.ReleaseCount(o.no); n != 1 {
			t.Errorf("%s released %d times by the inventory, want 1", o.no, n)
		}
	}
	if st := w.inv.Stats(); st.Duplicates != 0 || st.Unconfirmed != 0 {
		t.Errorf("inventory stats %+v: want 0 duplicates and no release before its confirmation", st)
	}
}
