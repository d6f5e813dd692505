package main

import (
	"context"
	"errors"
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
// refunds never released, a job not drained, a refund not settled, and
// a ledger that disagrees with WeChat Pay (refunds it never paid, an
// order it was paid for) are all counted; and an empty run, or one whose
// WeChat Pay faults never happened, is "checks without evidence".
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
	// keys.
	inv := inventorysim.New()
	for _, p := range []struct{ path, key, body string }{
		{"/confirmations", "confirm:F1", `{"key":"confirm:F1","out_trade_no":"F1","amount_total":100}`},
		{"/confirmations", "confirm:F1-again", `{"key":"confirm:F1-again","out_trade_no":"F1","amount_total":90}`},
		{"/confirmations", "confirm:C9", `{"key":"confirm:C9","out_trade_no":"C9","amount_total":100}`},
		{"/releases", "release:RFX1", `{"key":"release:RFX1","out_refund_no":"RFX1","out_trade_no":"F1","amount":60}`},
		{"/releases", "release:RFX1-again", `{"key":"release:RFX1-again","out_refund_no":"RFX1","out_trade_no":"F1","amount":60}`},
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
	ev := &Evidence{Ctx: ctx, DB: db, Sim: sim, Inv: inv,
		Accepted: map[string]string{"n-lost": "C1"}, ForgedOrders: []string{"F1"}, Uncommitted: []string{"C2"}}
	if err := pendingWork(ctx, db, ev); err != nil {
		t.Fatal(err)
	}
	// F1's confirmation job was never run; RFX3 is UNKNOWN.
	assertCounts(t, ev, map[string]int{"accepted-but-lost notifications": 2, "forged notifications accepted": 2,
		"double refunds": 4, "double confirmations": 1, "stock effects missing or unearned": 4,
		"orders with Σrefunds > paid": 1, "jobs not drained": 1, "refunds not settled": 1,
		"ledger disagrees with WeChat Pay": 3, "checks without evidence": 1})

	empty, err := ledgertest.OpenMySQL(t).DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	idle := &Evidence{Ctx: ctx, DB: empty, Sim: sim, Inv: inventorysim.New()}
	if err := pendingWork(ctx, empty, idle); err != nil {
		t.Fatal(err)
	}
	assertCounts(t, idle, map[string]int{"checks without evidence": 4, "ledger disagrees with WeChat Pay": 1})
	if n := (&Report{GaveUp: 2}).Violations(); n != 2 {
		t.Errorf("a run that gave up 2 notifications has %d violations", n)
	}
	if n := (&Report{FaultErrors: []error{errors.New("Redis never came back")}}).Violations(); n != 1 {
		t.Errorf("a run whose fault failed has %d violations, want 1", n)
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
