package main

import (
	"context"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestCheckFindsViolations proves the checker is not blind: a lost
// accepted notification, a forged order in the ledger, refunds without an
// idempotency key whose sum exceeds the paid amount, and an idle outbox
// are counted.
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
	// Two refunds of 60 on the 100 paid, neither behind an idempotency key.
	for _, no := range []string{"RFX1", "RFX2"} {
		if _, err := db.ExecContext(ctx, `INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total,
			requester, created_at, updated_at) VALUES (?, 'F1', 'SUCCESS', 60, 100, 'o', ?, ?)`, no, time.Now(), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := wxpaysim.GenerateKeys("1900000109", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	sim := wxpaysim.New(keys, wxpaysim.Options{})
	defer sim.Close()
	ev := &Evidence{Ctx: ctx, DB: db, Sim: sim, Inv: inventorysim.New(),
		Accepted: map[string]string{"n-lost": "C1"}, ForgedOrders: []string{"F1"}}
	invs, err := Check(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"accepted-but-lost notifications": 1, "forged notifications accepted": 2,
		"double refunds": 3, "orders with Σrefunds > paid": 1, "checks without evidence": 2}
	for _, inv := range invs {
		if inv.Count != want[inv.Name] {
			t.Errorf("%s = %d, want %d", inv.Name, inv.Count, want[inv.Name])
		}
	}
}
