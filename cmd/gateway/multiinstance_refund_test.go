package main

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
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
	held := map[string]string{}
	for no, refunds := range w.refundsAtWeChat(t) {
		for outRefundNo, amount := range refunds {
			held[no] = outRefundNo
			if len(refunds) != 1 || amount != 60 {
				t.Errorf("%s: refunds at WeChat Pay %v, want one of 60", no, refunds)
			}
		}
	}
	if len(held) != len(orders) {
		t.Errorf("refunds at WeChat Pay for %d orders, want %d", len(held), len(orders))
	}
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

// raceFreshRefunds has every order, 40 of its 100 fen left, asked at
// once for two new refunds of 25 under keys C and D, each key sent to
// all three instances at the same moment: only one of the two fits. The
// key decides between the instances sharing it, the order's reservation
// between the keys, whichever instances they reached: every answer under
// one key is 201 or 202 naming the same refund, which WeChat Pay holds
// (asked for once), and every answer under the other is 409 ECONFLICT.
func (w *multiWorld) raceFreshRefunds(t *testing.T, orders []paidOrder) {
	type result struct {
		no, key string
		r       refundTry
	}
	results := make(chan result, len(orders)*2*len(w.procs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, o := range orders {
		for _, key := range []string{"C", "D"} {
			for _, p := range w.procs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results <- result{o.no, key, retryRefund(t, p.url(), o, key+"-"+o.no, 25)}
				}()
			}
		}
	}
	close(start)
	wg.Wait()
	close(results)
	answers := map[string]map[string][]refundTry{} // order, key: answers
	inFlight := 0
	for res := range results {
		if answers[res.no] == nil {
			answers[res.no] = map[string][]refundTry{}
		}
		answers[res.no][res.key] = append(answers[res.no][res.key], res.r)
		inFlight += res.r.inFlight
	}
	if inFlight == 0 {
		t.Error("no request was told EIN_FLIGHT: the instances never shared a key at once")
	}
	atWx := w.refundsAtWeChat(t)
	for _, o := range orders {
		var made []string
		for _, key := range []string{"C", "D"} {
			rs, names, refused := answers[o.no][key], map[string]bool{}, 0
			for _, r := range rs {
				switch {
				case r.err == nil && (r.status == 201 || r.status == 202) && r.outRefundNo != "":
					names[r.outRefundNo] = true
				case r.err == nil && r.status == 409 && r.code == "ECONFLICT":
					refused++
				default:
					t.Errorf("%s key %s: %d %s %v, want 201, 202 or 409 ECONFLICT", o.no, key, r.status, r.code, r.err)
				}
			}
			switch {
			case len(rs) != len(w.procs):
				t.Errorf("%s key %s: %d answers, want %d", o.no, key, len(rs), len(w.procs))
			case len(names) == 1 && refused == 0:
				for no := range names {
					made = append(made, no)
				}
			case len(names) > 0:
				t.Errorf("%s key %s: answers name refunds %v and %d refused; want one refund named by all, or all refused", o.no, key, names, refused)
			}
		}
		if len(made) != 1 {
			t.Errorf("%s: keys C and D made refunds %v; want exactly one (25 + 25 > the 40 left)", o.no, made)
			continue
		}
		if amount, ok := atWx[o.no][made[0]]; !ok || amount != 25 || len(atWx[o.no]) != 2 {
			t.Errorf("%s: refunds at WeChat Pay %v; want two, one of them %s of 25", o.no, atWx[o.no], made[0])
		}
	}
}

// refundsAtWeChat returns, by order, the refunds WeChat Pay holds
// (out_refund_no: amount), each of which it must have been asked for once
// and have paid at most once, and none of its orders refunded more than
// the 100 it was paid.
func (w *multiWorld) refundsAtWeChat(t *testing.T) map[string]map[string]int64 {
	held := map[string]map[string]int64{}
	for _, r := range w.wx.Refunds() {
		if held[r.OutTradeNo] == nil {
			held[r.OutTradeNo] = map[string]int64{}
		}
		held[r.OutTradeNo][r.OutRefundNo] = r.Amount
		if r.Requests != 1 || r.Executed > 1 {
			t.Errorf("%s at WeChat Pay: %d create calls, executed %d; want 1, at most 1", r.OutRefundNo, r.Requests, r.Executed)
		}
	}
	for no, refunds := range held {
		sum := int64(0)
		for _, amount := range refunds {
			sum += amount
		}
		if sum > 100 {
			t.Errorf("%s: refunds at WeChat Pay %v sum to %d, over the 100 paid", no, refunds, sum)
		}
	}
	if blind := w.wx.RefundsResentBlind(); len(blind) != 0 {
		t.Errorf("refunds sent to WeChat Pay again without a query first: %v", blind)
	}
	return held
}

// checkRefundedOnce waits for every refund to settle, then wants the
// ledger to agree with WeChat Pay (the same SUCCESS refunds of each order,
// refunded_total their sum, within what was paid), and the stock released
// once per refund.
func (w *multiWorld) checkRefundedOnce(t *testing.T, orders []paidOrder) {
	waitFor(t, 30*time.Second, "every refund to settle", func() bool {
		var open int
		err := w.sqlDB.QueryRow("SELECT COUNT(*) FROM refunds WHERE state <> 'SUCCESS'").Scan(&open)
		return err == nil && open == 0
	})
	atWx := w.refundsAtWeChat(t)
	for _, o := range orders {
		inLedger := map[string]int64{}
		rows, err := w.sqlDB.Query("SELECT out_refund_no, amount FROM refunds WHERE out_trade_no = ?", o.no)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var no string
			var amount int64
			if err := rows.Scan(&no, &amount); err != nil {
				t.Fatal(err)
			}
			inLedger[no] = amount
		}
		rows.Close()
		var total, paid int64
		if err := w.sqlDB.QueryRow("SELECT refunded_total, amount_total FROM payments WHERE out_trade_no = ?", o.no).Scan(&total, &paid); err != nil {
			t.Fatal(err)
		}
		if len(atWx[o.no]) != 2 || !maps.Equal(inLedger, atWx[o.no]) || total != 85 || paid != 100 {
			t.Errorf("%s: refunds in the ledger %v, refunded_total %d of %d; at WeChat Pay %v; want the same two, 85 of 100",
				o.no, inLedger, total, paid, atWx[o.no])
		}
	}
	waitFor(t, 30*time.Second, "the releases to drain", func() bool {
		var left int
		err := w.sqlDB.QueryRow("SELECT COUNT(*) FROM outbox_jobs WHERE state <> 'DONE'").Scan(&left)
		return err == nil && left == 0
	})
	for _, o := range orders {
		if n := w.inv.ReleaseCount(o.no); n != len(atWx[o.no]) {
			t.Errorf("%s released %d times by the inventory, want %d (once per refund)", o.no, n, len(atWx[o.no]))
		}
	}
	if st := w.inv.Stats(); st.Duplicates != 0 || st.Unconfirmed != 0 || st.Errors == 0 {
		t.Errorf("inventory stats %+v: want 0 duplicates, no release before its confirmation, and 500s injected", st)
	}
	if blind := w.inv.ResentBlind(); len(blind) != 0 {
		t.Errorf("sent again to the inventory without a query first: %v", blind)
	}
}
