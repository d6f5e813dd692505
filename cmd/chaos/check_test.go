package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestCheckFindsViolations proves the checker is not blind: a lost
// accepted notification, a forged order in the ledger, refunds without an
// idempotency key whose sum exceeds the paid amount, an order the
// inventory confirmed twice, another it confirmed unpaid, successful
// refunds never released, a job not drained, a refund not settled, a
// refund WeChat Pay refused as beyond the order or as changed, a key
// sent to the inventory again with another body, a refund storm that
// stopped, went unanswered or was answered with a refund the ledger lacks,
// and
// a ledger that disagrees with WeChat Pay (refunds it never paid, an
// order it was paid for), a forged delivery answered 2xx and one that got
// no 401 ESIGNATURE are all counted; and an empty run, or one whose
// WeChat Pay faults never happened or whose money rule never refused a
// refund, is "checks without evidence".
func TestCheckFindsViolations(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-forged", Source: ledger.SourceCallback,
		EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource", OutTradeNo: "F1", Plaintext: "{}"},
		OutTradeNo: "F1", TransactionID: "42F1", TradeState: "SUCCESS", AmountTotal: 100, PayerTotal: 100,
		SuccessTime: time.Now()}
	if _, err := s.ApplyTransaction(ctx, u); err != nil {
		t.Fatal(err)
	}
	db, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	// Two refunds of 60 on the 100 paid, neither behind an idempotency key
	// nor released by the inventory, and a third not settled.
	for no, state := range map[string]string{"RFX1": "SUCCESS", "RFX2": "SUCCESS", "RFX3": "UNKNOWN"} {
		if _, err := db.ExecContext(ctx, `INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total,
			requester, created_at, updated_at) VALUES (?, 'F1', ?, 60, 100, 'o', ?, ?)`, no, state, time.Now(), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// F1 confirmed twice under two keys (the second for 90 fen of its
	// 100), C9 confirmed without being paid, RFX1 released twice under two
	// keys, RFX2 (a refund of F1) released for U1, an order never confirmed.
	inv := inventorysim.New()
	for _, p := range []struct{ path, key, body string }{
		{"/confirmations", "confirm:F1", `{"key":"confirm:F1","out_trade_no":"F1","amount_total":100}`},
		{"/confirmations", "confirm:F1-again", `{"key":"confirm:F1-again","out_trade_no":"F1","amount_total":90}`},
		{"/confirmations", "confirm:C9", `{"key":"confirm:C9","out_trade_no":"C9","amount_total":100}`},
		{"/releases", "release:RFX1", `{"key":"release:RFX1","out_refund_no":"RFX1","out_trade_no":"F1","amount":60}`},
		{"/releases", "release:RFX1-again", `{"key":"release:RFX1-again","out_refund_no":"RFX1","out_trade_no":"F1","amount":60}`},
		{"/releases", "release:RFX2", `{"key":"release:RFX2","out_refund_no":"RFX2","out_trade_no":"U1","amount":60}`}, // U1 never confirmed
	} {
		req := httptest.NewRequest("POST", p.path, strings.NewReader(p.body))
		req.Header.Set("Idempotency-Key", p.key)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		inv.Handler().ServeHTTP(w, req)
		if w.Code/100 != 2 {
			t.Fatalf("plant %s %s: %d %s", p.path, p.key, w.Code, w.Body)
		}
	}
	// C9's key again with another amount: the inventory refuses it (409),
	// but the gateway must never send it.
	req := httptest.NewRequest("POST", "/confirmations", strings.NewReader(`{"key":"confirm:C9","out_trade_no":"C9","amount_total":99}`))
	req.Header.Set("Idempotency-Key", "confirm:C9")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	if inv.Handler().ServeHTTP(rec, req); rec.Code != http.StatusConflict {
		t.Fatalf("plant a mismatch: %d %s", rec.Code, rec.Body)
	}
	keys, err := wxpaysim.GenerateKeys("1900000109", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	sim := wxpaysim.New(keys, wxpaysim.Options{})
	defer sim.Close()
	// W1 paid at WeChat Pay, never in the ledger.
	if _, err := sim.Pay(ctx, "W1", 100, "o", true); err != nil {
		t.Fatal(err)
	}
	ev := &Evidence{Ctx: ctx, DB: db, Sim: sim, Inv: inv, Accepted: map[string]string{"n-lost": "C1"},
		ForgedOrders: []string{"F1", "F2", "F3"}, ForgedAccepted: 1, ForgedWrongReason: []string{"F3 never refused, last answer: 503"},
		ForgedRefused: 0, // F2's end was lost: one more violation
		Uncommitted:   []string{"C2"},
		// WeChat Pay refused a refund beyond the order's rest, and two
		// refund numbers sent again with other parameters.
		RefundsRefused: map[string]int{"over_refund": 1, "changed_params": 2, "not_paid": 3},
		// The storm stopped early, two requests got no final answer and
		// one key's answer named a refund the ledger does not have.
		Storm: &storm{keys: map[string]int{}, status: map[string]int{"0 storm deadline": 2, "409 ECONFLICT": 1},
			answers: map[string]map[string]bool{"K1": {"RFX1": true}, "K2": {"RGONE": true}}, err: errors.New("no token"), unrun: 7}}
	if err := pendingWork(ctx, db, ev); err != nil {
		t.Fatal(err)
	}
	// F1's confirmation job was never run; RFX3 is UNKNOWN; neither
	// simulator injected a fault.
	assertCounts(t, ev, map[string]int{"accepted-but-lost notifications": 2, "forged notifications accepted": 5,
		"double refunds": 9, "double confirmations": 2, "stock effects missing or unearned": 5,
		"orders with Σrefunds > paid": 2, "jobs not drained": 1, "refunds not settled": 1,
		"ledger disagrees with WeChat Pay": 3, "checks without evidence": 2})

	empty, err := ledgertest.OpenMySQL(t).DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	idle := &Evidence{Ctx: ctx, DB: empty, Sim: sim, Inv: inventorysim.New()}
	if err := pendingWork(ctx, empty, idle); err != nil {
		t.Fatal(err)
	}
	// No refund (so none succeeded, none twice), no 409, no forgery, no
	// job, no inventory call, no WeChat Pay fault.
	assertCounts(t, idle, map[string]int{"checks without evidence": 8, "ledger disagrees with WeChat Pay": 1})
	if n := (&Report{GaveUp: 2}).Violations(); n != 2 {
		t.Errorf("a run that gave up 2 notifications has %d violations", n)
	}
	if n := (&Report{FaultErrors: []error{errors.New("Redis never came back")}}).Violations(); n != 1 {
		t.Errorf("a run whose fault failed has %d violations, want 1", n)
	}
}

// TestCheckWantsRefundEvidence: "Σrefunds > paid" and the release checks
// count as tested only once a refund succeeded, an order got both refunds
// that fit and the money rule refused a third (409 ECONFLICT). Each step
// adds to the ledger of the one before.
func TestCheckWantsRefundEvidence(t *testing.T) {
	ctx := context.Background()
	db, err := ledgertest.OpenMySQL(t).DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	refused := &storm{status: map[string]int{"201 ": 2, "409 ECONFLICT": 1}}
	type refund struct{ no, order, state string }
	for _, step := range []struct {
		name  string
		add   []refund
		storm *storm
		want  int
	}{
		{"no refund", nil, refused, 3},
		{"a refund not settled", []refund{{"RE1", "A", "UNKNOWN"}}, refused, 2},
		{"one success on each of two orders", []refund{{"RE2", "A", "SUCCESS"}, {"RE3", "B", "SUCCESS"}}, refused, 1},
		{"two successes on one order", []refund{{"RE4", "A", "SUCCESS"}}, refused, 0},
		{"no storm", nil, nil, 1},
		{"the money rule never refused", nil, &storm{status: map[string]int{"201 ": 2, "409 EIN_FLIGHT": 1}}, 1},
	} {
		for _, r := range step.add {
			if _, err := db.ExecContext(ctx, `INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total,
				requester, created_at, updated_at) VALUES (?, ?, ?, 40, 100, 'o', ?, ?)`, r.no, r.order, r.state,
				time.Now(), time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		inv := Invariant{}
		if err := refundEvidence(&Evidence{Ctx: ctx, DB: db, Storm: step.storm}, &inv); err != nil {
			t.Fatal(err)
		}
		if inv.Count != step.want {
			t.Errorf("%s: %d gaps, want %d (%v)", step.name, inv.Count, step.want, inv.Examples)
		}
	}
}

// TestCheckForgeriesAllAccounted: every forged order ends counted exactly
// once, and only a 401 ESIGNATURE counts as refused; a delivery answered
// 5xx until the run ends, or never sent, is unproven, not passed.
func TestCheckForgeriesAllAccounted(t *testing.T) {
	keys, err := wxpaysim.GenerateKeys("1900000109", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                       string
		status                     int
		reason                     string
		cancelled                  bool
		refused, accepted, unknown int
	}{
		{"signature refused", http.StatusUnauthorized, "ESIGNATURE", false, 1, 0, 0},
		{"refused for another reason", http.StatusBadRequest, "EINVALID", false, 0, 0, 1},
		{"stale, not the signature", http.StatusUnauthorized, "ESTALE", false, 0, 0, 1},
		{"accepted", http.StatusNoContent, "", false, 0, 1, 0},
		{"never answered but 5xx", http.StatusServiceUnavailable, "EUNAVAILABLE", false, 0, 0, 1},
		{"never sent", http.StatusUnauthorized, "ESIGNATURE", true, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				fmt.Fprintf(w, `{"code":"FAIL","message":"m","reason":%q}`, tc.reason)
			}))
			defer srv.Close()
			d := &driver{o: Options{Concurrency: 1}, url: srv.URL, client: srv.Client(), forger: keys}
			// 5xx is sent again until the run ends: end it after a few tries.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			d.run(ctx, []delivery{{order: &order{no: "F1", amount: 100}, forged: true}})
			if d.forgedRefused != tc.refused || d.forgedAccepted != tc.accepted || len(d.forgedWrongReason) != tc.unknown {
				t.Errorf("refused %d, accepted %d, unproven %v; want %d, %d, %d", d.forgedRefused, d.forgedAccepted,
					d.forgedWrongReason, tc.refused, tc.accepted, tc.unknown)
			}
		})
	}
}

// assertCounts runs the checker and wants exactly these counts (0 for
// every invariant not named).
func assertCounts(t *testing.T, ev *Evidence, want map[string]int) {
	t.Helper()
	invs, err := Check(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range invs {
		if inv.Count != want[inv.Name] {
			t.Errorf("%s = %d, want %d (%v)", inv.Name, inv.Count, want[inv.Name], inv.Examples)
		}
		delete(want, inv.Name)
	}
	for name := range want {
		t.Errorf("no invariant named %q", name)
	}
}
