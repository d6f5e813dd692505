package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestCheckFindsViolations proves the checker is not blind: a lost
// accepted notification, a forged order in the ledger, refunds without an
// idempotency key whose sum exceeds the paid amount, an order the
// inventory confirmed twice, another it confirmed unpaid, successful
// refunds never released, a job not drained, refunds not settled (one
// UNKNOWN, one still ABNORMAL), a refund WeChat Pay refused as beyond the
// order or as changed, a key
// sent to the inventory again with another body, keys sent to it again
// without a query answered "not found" first, a refund storm that
// stopped, went unanswered or was answered with a refund the ledger lacks,
// and a ledger that disagrees with WeChat Pay (refunds it never paid, an
// order it was paid for, the forged order it never was), a forged
// delivery answered 2xx and one that got no 401 ESIGNATURE are all
// counted; and an empty run, or one whose
// WeChat Pay faults never happened or whose money rule never refused a
// refund, is "checks without evidence".
func TestCheckFindsViolations(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	paidInLedger(t, s, "n-forged", "F1")
	db, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	// Two refunds of 60 on the 100 paid, neither behind an idempotency key
	// nor released by the inventory, and two more not settled (ABNORMAL is
	// not final).
	for no, state := range map[string]string{"RFX1": "SUCCESS", "RFX2": "SUCCESS", "RFX3": "UNKNOWN", "RFX4": "ABNORMAL"} {
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
		// confirm:F1 sent again, no query of it answered "not found" since
		// (the dedup hides it from every other count).
		{"/confirmations", "confirm:F1", `{"key":"confirm:F1","out_trade_no":"F1","amount_total":100}`},
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
		// The storm stopped early, two requests got no final answer, one
		// a 404 (a 422 is WeChat Pay's refusal, which it made) and one
		// key's answer named a refund the ledger does not have.
		Storm: &storm{keys: map[string]int{}, status: map[string]int{"0 storm deadline": 2, "409 ECONFLICT": 1,
			"404 ENOTFOUND": 1, "422 EREFUSED": 1},
			answers: map[string]map[string]bool{"K1": {"RFX1": true}, "K2": {"RGONE": true}}, err: errors.New("no token"), unrun: 7}}
	if err := pendingWork(ctx, db, ev); err != nil {
		t.Fatal(err)
	}
	// confirm:F1 and confirm:C9 were sent again unasked. F1's
	// confirmation job was never run; RFX3 is UNKNOWN and RFX4
	// ABNORMAL; neither simulator injected a fault, no refund was CLOSED,
	// none moved from ABNORMAL to SUCCESS and no refund notification was
	// acked.
	assertCounts(t, ev, map[string]int{"accepted-but-lost notifications": 2, "forged notifications accepted": 5,
		"double refunds": 11, "double confirmations": 2, "stock effects missing or unearned": 5,
		"calls sent again without asking": 2, "orders with Σrefunds > paid": 2, "jobs not drained": 1,
		"refunds not settled": 2, "ledger disagrees with WeChat Pay": 4, "checks without evidence": 5})
	// A soak injects no faults: none of WeChat Pay's or the inventory's is
	// wanted as evidence, nor a refund CLOSED or one moved from ABNORMAL;
	// the refund notifications never acked still are.
	ev.FaultFree = true
	assertCounts(t, ev, map[string]int{"accepted-but-lost notifications": 2, "forged notifications accepted": 5,
		"double refunds": 11, "double confirmations": 2, "stock effects missing or unearned": 5,
		"calls sent again without asking": 2, "orders with Σrefunds > paid": 2, "jobs not drained": 1,
		"refunds not settled": 2, "ledger disagrees with WeChat Pay": 4, "checks without evidence": 1})

	empty, err := ledgertest.OpenMySQL(t).DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	idle := &Evidence{Ctx: ctx, DB: empty, Sim: sim, Inv: inventorysim.New()}
	if err := pendingWork(ctx, empty, idle); err != nil {
		t.Fatal(err)
	}
	// No refund (so none succeeded, none twice, none CLOSED, none
	// ABNORMAL then SUCCESS), no 409, no forgery, no refund notification
	// acked, no job, no inventory call, no WeChat Pay fault.
	assertCounts(t, idle, map[string]int{"checks without evidence": 11, "ledger disagrees with WeChat Pay": 1})
	if n := (&Report{GaveUp: 2}).Violations(); n != 2 {
		t.Errorf("a run that gave up 2 notifications has %d violations", n)
	}
	if n := (&Report{FaultErrors: []error{errors.New("Redis never came back")}}).Violations(); n != 1 {
		t.Errorf("a run whose fault failed has %d violations, want 1", n)
	}
}

// TestCheckWantsRefundEvidence: "Σrefunds > paid" and the release checks
// count as tested only once a refund succeeded, an order got both refunds
// that fit and the money rule refused a third (409 ECONFLICT); WeChat
// Pay's other outcomes only once a refund was CLOSED and one moved from
// ABNORMAL (not merely PROCESSING) to SUCCESS. Each step adds to the
// ledger of the one before.
func TestCheckWantsRefundEvidence(t *testing.T) {
	ctx := context.Background()
	db, err := ledgertest.OpenMySQL(t).DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	refused := &storm{status: map[string]int{"201 ": 2, "409 ECONFLICT": 1}}
	type refund struct{ no, order, state, from string } // from: the state its history says it left
	for _, step := range []struct {
		name  string
		add   []refund
		storm *storm
		want  int
	}{
		{"no refund", nil, refused, 5},
		{"a refund not settled", []refund{{"RE1", "A", "UNKNOWN", ""}}, refused, 4},
		{"one success on each of two orders", []refund{{"RE2", "A", "SUCCESS", ""}, {"RE3", "B", "SUCCESS", ""}}, refused, 3},
		{"two successes on one order", []refund{{"RE4", "A", "SUCCESS", ""}}, refused, 2},
		{"a refund closed", []refund{{"RE5", "B", "CLOSED", "PROCESSING"}}, refused, 1},
		{"a success after PROCESSING", []refund{{"RE6", "C", "SUCCESS", "PROCESSING"}}, refused, 1},
		{"a success after ABNORMAL", []refund{{"RE7", "C", "SUCCESS", "ABNORMAL"}}, refused, 0},
		{"no storm", nil, nil, 1},
		{"the money rule never refused", nil, &storm{status: map[string]int{"201 ": 2, "409 EIN_FLIGHT": 1}}, 1},
	} {
		for _, r := range step.add {
			if _, err := db.ExecContext(ctx, `INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total,
				requester, created_at, updated_at) VALUES (?, ?, ?, 40, 100, 'o', ?, ?)`, r.no, r.order, r.state,
				time.Now(), time.Now()); err != nil {
				t.Fatal(err)
			}
			if r.from == "" {
				continue
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO state_history (entity, entity_key, out_trade_no, from_state,
				to_state, source, created_at) VALUES ('refund', ?, ?, ?, ?, 'query', ?)`, r.no, r.order, r.from, r.state,
				time.Now()); err != nil {
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

// TestCheckComparesWithTheSimulators proves the checks that compare the
// ledger with the simulators are not blind: a healthy world (see
// newSimWorld) has no double refund, no stock effect missing or unearned,
// no order refunded beyond what was paid and no disagreement with WeChat
// Pay, and each violation planted in it raises exactly the invariants it
// breaks, by as much, over that world's own verdict.
func TestCheckComparesWithTheSimulators(t *testing.T) {
	store := ledgertest.OpenMySQL(t)
	keys, err := wxpaysim.GenerateKeys("1900000109", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	const dr, se, over, wx = "double refunds", "stock effects missing or unearned", "orders with Σrefunds > paid",
		"ledger disagrees with WeChat Pay"
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, w *simWorld)
		want  map[string]int // rises over the healthy world
		says  []string       // in the examples
	}{
		{"healthy", func(*testing.T, *simWorld) {}, nil, nil},
		// Named by no answer either, and WeChat refunded 50 fen more.
		{"wechat executed a refund the ledger lacks", func(t *testing.T, w *simWorld) { w.execute(t, "RX", 50) },
			map[string]int{dr: 2, wx: 1}, []string{"wechat executed RX, unknown to the ledger",
				"wechat executed RX, named in no idempotency key's answer", "P1: 900 fen refunded in the ledger, 950 at wechat"}},
		// R1's application sent again after the query that found it: WeChat
		// Pay answers the repeat, and nothing else shows it.
		{"a refund sent again without asking", func(t *testing.T, w *simWorld) {
			if _, err := w.client.QueryRefund(w.ctx, "R1"); err != nil {
				t.Fatal(err)
			}
			w.resend(t, "R1", 300)
		}, map[string]int{"calls sent again without asking": 1}, []string{"wechat got refund R1 again"}},
		// Sent again after a query did not find it (a lagging one): asked.
		{"a refund sent again after a query did not find it", func(t *testing.T, w *simWorld) {
			w.sim.SetFaults(wxpaysim.Faults{RefundQueryLag: time.Hour})
			if _, err := w.client.QueryRefund(w.ctx, "R1"); !errors.Is(err, wechatpay.ErrNotFound) {
				t.Fatalf("query of R1 in the lag: %v, want not found", err)
			}
			w.sim.SetFaults(wxpaysim.Faults{})
			w.resend(t, "R1", 300)
		}, nil, nil},
		{"a key answered with two refunds", func(t *testing.T, w *simWorld) {
			w.storm.final("K1", http.StatusCreated, refundAnswer{OutRefundNo: "R2"})
		}, map[string]int{dr: 1}, []string{"idempotency key K1 answered with 2 different refunds"}},
		// K3 got a final 409, naming nothing, yet WeChat paid its refund.
		{"a refund named in no answer", func(t *testing.T, w *simWorld) { delete(w.storm.answers, "K3") },
			map[string]int{dr: 1}, []string{"wechat executed R3, named in no idempotency key's answer"}},
		{"refund amount differs", func(t *testing.T, w *simWorld) {
			w.exec(t, "UPDATE refunds SET amount = 40 WHERE out_refund_no = 'R4'")
		}, map[string]int{wx: 1}, []string{"refund R4: 40 fen in the ledger, 50 at wechat"}},
		// The gateway concluded FAILED (giving the 50 fen back); WeChat paid.
		{"the ledger gave up a refund wechat paid", func(t *testing.T, w *simWorld) {
			w.record(t, "K5", "R5", 50)
			w.execute(t, "R5", 50)
			w.settle(t, "R5", ledger.RefundFailed)
		}, map[string]int{wx: 2}, []string{"refund R5: FAILED in the ledger, SUCCESS at wechat",
			"P1: 900 fen refunded in the ledger, 950 at wechat"}},
		{"payment transaction differs", func(t *testing.T, w *simWorld) {
			w.exec(t, "UPDATE payments SET transaction_id = '4200OTHER' WHERE out_trade_no = 'P1'")
		}, map[string]int{wx: 1}, []string{"P1: ledger 4200OTHER 1000 fen, wechat 4200"}},
		// The inventory confirmed the 1000 fen WeChat was paid.
		{"payment amount differs", func(t *testing.T, w *simWorld) {
			w.exec(t, "UPDATE payments SET amount_total = 990 WHERE out_trade_no = 'P1'")
		}, map[string]int{wx: 1, se: 1}, []string{" 990 fen, wechat 4200", "inventory confirmed P1 for 1000 fen, paid 990"}},
		{"refunded total differs", func(t *testing.T, w *simWorld) {
			w.exec(t, "UPDATE payments SET refunded_total = 890 WHERE out_trade_no = 'P1'")
		}, map[string]int{wx: 1}, []string{"P1: 890 fen refunded in the ledger, 900 at wechat"}},
		// The refunds still sum to 900: only refunded_total > amount_total can fire.
		{"refunded total beyond the paid amount", func(t *testing.T, w *simWorld) {
			w.exec(t, "UPDATE payments SET refunded_total = 1010 WHERE out_trade_no = 'P1'")
		}, map[string]int{over: 1, wx: 1}, []string{"ledger: P1", "P1: 1010 fen refunded in the ledger, 900 at wechat"}},
		{"a paid order never confirmed", func(t *testing.T, w *simWorld) { w.pay(t, "P2", 500) },
			map[string]int{se: 1}, []string{"paid P2 never confirmed by the inventory"}},
		// Recorded as paid (and confirmed) without WeChat Pay being paid.
		{"a payment wechat never had", func(t *testing.T, w *simWorld) {
			u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-P3", Source: ledger.SourceCallback,
				EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource", OutTradeNo: "P3", Plaintext: "{}"},
				OutTradeNo: "P3", TransactionID: "42P3", TradeState: "SUCCESS", AmountTotal: 500, PayerTotal: 500,
				SuccessTime: time.Now()}
			if _, err := w.store.ApplyTransaction(w.ctx, u); err != nil {
				t.Fatal(err)
			}
			w.confirm(t, "P3", 500)
		}, map[string]int{wx: 1}, []string{"P3 SUCCESS in the ledger, not paid at wechat"}},
		{"a refund never released", func(t *testing.T, w *simWorld) { w.refund(t, "K5", "R5", 50) },
			map[string]int{se: 1}, []string{"refund R5 never released by the inventory"}},
		{"a release of another amount", func(t *testing.T, w *simWorld) {
			w.refund(t, "K5", "R5", 50)
			w.release(t, "R5", 49)
		}, map[string]int{se: 1}, []string{"inventory released R5 for 49 fen, refunded 50"}},
		{"a release of a CLOSED refund", func(t *testing.T, w *simWorld) { w.release(t, "R4", 50) },
			map[string]int{se: 1}, []string{"inventory released R4, not a successful refund in the ledger"}},
		// Held ABNORMAL, then paid by a person; the ledger follows and the
		// stock is released: no violation, and one gap in the evidence less.
		{"an ABNORMAL refund paid later", func(t *testing.T, w *simWorld) {
			w.abnormal(t, "K5", "R5", 50)
			w.resolve(t, "R5", "SUCCESS")
			w.settle(t, "R5", "")
			w.release(t, "R5", 50)
		}, map[string]int{"checks without evidence": -1}, nil},
		{"the ledger kept ABNORMAL a refund wechat paid", func(t *testing.T, w *simWorld) {
			w.abnormal(t, "K5", "R5", 50)
			w.resolve(t, "R5", "SUCCESS")
		}, map[string]int{wx: 1}, []string{"refund R5: ABNORMAL in the ledger, SUCCESS at wechat"}},
		// WeChat gave the 50 fen back; the ledger still counts them.
		{"the ledger kept ABNORMAL a refund wechat closed", func(t *testing.T, w *simWorld) {
			w.abnormal(t, "K5", "R5", 50)
			w.resolve(t, "R5", "CLOSED")
		}, map[string]int{wx: 2}, []string{"refund R5: ABNORMAL in the ledger, CLOSED at wechat",
			"P1: 950 fen refunded in the ledger, 900 at wechat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSimWorld(t, store, keys)
			healthy := w.check(t)
			for _, name := range []string{dr, se, over, wx} {
				if inv := healthy[name]; inv.Count != 0 {
					t.Fatalf("healthy world: %s = %d (%v)", name, inv.Count, inv.Examples)
				}
			}
			tc.plant(t, w)
			assertRises(t, healthy, w.check(t), tc.want, tc.says)
		})
	}
}

// simWorld is a world for the checks that compare the ledger with the
// simulators: one ledger database, a WeChat Pay simulator reached through
// the gateway's signed client, an inventory simulator and a storm.
type simWorld struct {
	ctx    context.Context
	store  *ledger.Store
	db     *sql.DB
	sim    *wxpaysim.Sim
	client *wechatpay.Client
	inv    *inventorysim.Sim
	storm  *storm
	acks   *ackWatch // the ledger right after each refund notification's 2xx
	base   string    // the WeChat Pay simulator's URL
	keys   *wxpaysim.Keys
}

// newClient returns the gateway's WeChat Pay client for the simulator,
// asking it to notify refunds to notifyURL ("" sends no notification).
func (w *simWorld) newClient(t *testing.T, notifyURL string) *wechatpay.Client {
	t.Helper()
	k := w.keys
	c, err := wechatpay.NewClient(w.ctx, wechatpay.ClientConfig{MchID: k.MchID, AppID: k.AppID,
		MerchantSerial: k.MerchantSerial, MerchantKey: k.MerchantKey, PublicKeyID: k.PublicKeyID,
		PublicKey: k.PublicKey(), BaseURL: w.base, Timeout: 5 * time.Second, RefundNotifyURL: notifyURL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newSimWorld empties the ledger and builds a healthy world on fresh
// simulators: order P1 of 1000 fen paid at WeChat Pay and in the ledger
// and confirmed by the inventory; refunds R1–R3 of 300 under keys K1–K3,
// paid and released; R4 of 50 under K4, CLOSED by WeChat Pay. The storm's
// answers name each refund once.
func newSimWorld(t *testing.T, store *ledger.Store, keys *wxpaysim.Keys) *simWorld {
	t.Helper()
	db, err := store.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	w := &simWorld{ctx: context.Background(), store: store, db: db, inv: inventorysim.New(), acks: newAckWatch(db),
		storm: &storm{keys: map[string]int{}, answers: map[string]map[string]bool{}, status: map[string]int{}}}
	w.sim = wxpaysim.New(keys, wxpaysim.Options{RefundSettleDelay: -1, OnRefundAck: w.acks.onAck})
	srv := httptest.NewServer(w.sim.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(w.sim.Close) // runs first: releases held connections
	w.base, w.keys = srv.URL, keys
	w.client = w.newClient(t, "")
	for _, table := range []string{"payments", "refunds", "idempotency_keys", "notifications", "state_history",
		"outbox_jobs", "anomalies"} {
		w.exec(t, "DELETE FROM "+table)
	}
	w.pay(t, "P1", 1000)
	w.confirm(t, "P1", 1000)
	for i, no := range []string{"R1", "R2", "R3"} {
		w.refund(t, fmt.Sprintf("K%d", i+1), no, 300)
		w.release(t, no, 300)
	}
	w.sim.SetFaults(wxpaysim.Faults{RefundOutcome: "CLOSED"})
	w.refund(t, "K4", "R4", 50)
	w.sim.SetFaults(wxpaysim.Faults{})
	return w
}

// pay pays order no at WeChat Pay (payer "o"+no) and records it in the
// ledger as its notification would, with WeChat's transaction.
func (w *simWorld) pay(t *testing.T, no string, amount int64) {
	t.Helper()
	tx, err := w.sim.Pay(w.ctx, no, amount, "o"+no, true)
	if err != nil {
		t.Fatal(err)
	}
	u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
		EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource", OutTradeNo: no, Plaintext: "{}"},
		OutTradeNo: no, TransactionID: tx.TransactionID, TradeState: tx.TradeState, AppID: tx.AppID, MchID: tx.MchID,
		PayerOpenID: tx.Payer.OpenID, AmountTotal: tx.Amount.Total, PayerTotal: tx.Amount.PayerTotal, SuccessTime: time.Now()}
	if _, err := w.store.ApplyTransaction(w.ctx, u); err != nil {
		t.Fatal(err)
	}
}

// refund makes refund no of P1 the way the gateway does: recorded under
// key, executed by WeChat Pay, its outcome recorded.
func (w *simWorld) refund(t *testing.T, key, no string, amount int64) {
	t.Helper()
	w.record(t, key, no, amount)
	w.execute(t, no, amount)
	w.settle(t, no, "")
}

// abnormal makes refund no of P1 as refund does, but WeChat Pay holds it
// ABNORMAL, and so does the ledger.
func (w *simWorld) abnormal(t *testing.T, key, no string, amount int64) {
	t.Helper()
	w.sim.SetFaults(wxpaysim.Faults{RefundAbnormalNext: 1})
	w.refund(t, key, no, amount)
}

// resolve ends ABNORMAL refund no at WeChat Pay as a person would.
func (w *simWorld) resolve(t *testing.T, no, status string) {
	t.Helper()
	if err := w.sim.ResolveAbnormal(no, status); err != nil {
		t.Fatal(err)
	}
}

// record takes idempotency key key of P1's payer and records refund no
// under it (CREATED); the storm's answer to the key names it.
func (w *simWorld) record(t *testing.T, key, no string, amount int64) {
	t.Helper()
	hash := "hash-" + key
	if _, run, err := w.store.BeginIdempotent(w.ctx, "oP1", key, hash, time.Minute, 24*time.Hour); err != nil || !run {
		t.Fatalf("take key %s: run %v, %v", key, run, err)
	}
	if _, err := w.store.CreateRefund(w.ctx, ledger.RefundRequest{OutTradeNo: "P1", OutRefundNo: no, Amount: amount,
		Reason: "test", Requester: "oP1", CheckAt: time.Now(), IdemScope: "oP1", IdemKey: key, IdemHash: hash}); err != nil {
		t.Fatal(err)
	}
	w.storm.keys["P1"]++
	w.storm.final(key, http.StatusCreated, refundAnswer{OutRefundNo: no})
}

// execute has WeChat Pay refund amount of P1 as no, through its signed
// API, and settle it (SUCCESS unless its faults say otherwise).
func (w *simWorld) execute(t *testing.T, no string, amount int64) {
	t.Helper()
	_, err := w.client.CreateRefund(w.ctx, wechatpay.RefundRequest{OutTradeNo: "P1", OutRefundNo: no, Reason: "test",
		Amount: amount, Total: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if n := w.sim.SettleRefunds(); n != 1 {
		t.Fatalf("settled %d refunds, want 1", n)
	}
}

// resend applies refund no of P1 at WeChat Pay again, as it was.
func (w *simWorld) resend(t *testing.T, no string, amount int64) {
	t.Helper()
	if _, err := w.client.CreateRefund(w.ctx, wechatpay.RefundRequest{OutTradeNo: "P1", OutRefundNo: no, Reason: "test",
		Amount: amount, Total: 1000}); err != nil {
		t.Fatal(err)
	}
}

// settle records refund no's outcome in the ledger: WeChat Pay's, as a
// query answers it, or the gateway's own verdict when one is given.
func (w *simWorld) settle(t *testing.T, no string, verdict ledger.RefundState) {
	t.Helper()
	u := ledger.RefundUpdate{OutRefundNo: no, State: verdict, Source: ledger.SourceAPI, LastError: "refused"}
	if verdict == "" {
		r, err := w.client.QueryRefund(w.ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		u = ledger.RefundUpdate{OutRefundNo: no, State: ledger.RefundState(r.Status), RefundID: r.RefundID,
			TransactionID: r.TransactionID, Amount: r.Amount, SuccessTime: r.SuccessTime, AcceptTime: r.CreateTime,
			Source: ledger.SourceQuery}
	}
	if _, err := w.store.ApplyRefund(w.ctx, u); err != nil {
		t.Fatal(err)
	}
}

// confirm and release post to the inventory what the outbox jobs would.
func (w *simWorld) confirm(t *testing.T, no string, amount int64) {
	t.Helper()
	key := "confirm:" + no
	w.post(t, "/confirmations", key, fmt.Sprintf(`{"key":%q,"out_trade_no":%q,"amount_total":%d}`, key, no, amount))
}

func (w *simWorld) release(t *testing.T, no string, amount int64) {
	t.Helper()
	key := "release:" + no
	w.post(t, "/releases", key, fmt.Sprintf(`{"key":%q,"out_refund_no":%q,"out_trade_no":"P1","amount":%d}`,
		key, no, amount))
}

func (w *simWorld) post(t *testing.T, path, key, body string) {
	t.Helper()
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	if w.inv.Handler().ServeHTTP(rec, req); rec.Code/100 != 2 {
		t.Fatalf("post %s: %d %s", body, rec.Code, rec.Body)
	}
}

func (w *simWorld) exec(t *testing.T, query string) {
	t.Helper()
	if _, err := w.db.ExecContext(w.ctx, query); err != nil {
		t.Fatal(err)
	}
}

// check runs the checker and returns its verdict by invariant.
func (w *simWorld) check(t *testing.T) map[string]Invariant {
	t.Helper()
	invs, err := Check(&Evidence{Ctx: w.ctx, DB: w.db, Sim: w.sim, Inv: w.inv, Storm: w.storm,
		RefundsRefused: w.sim.RefundsRefused(), RefundAcks: w.acks})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Invariant{}
	for _, inv := range invs {
		out[inv.Name] = inv
	}
	return out
}

// assertRises wants every count in after to exceed before's by exactly
// want (0 where not named), and each of says in some example.
func assertRises(t *testing.T, before, after map[string]Invariant, want map[string]int, says []string) {
	t.Helper()
	var examples []string
	for name, inv := range after {
		if rise := inv.Count - before[name].Count; rise != want[name] {
			t.Errorf("%s rose by %d, want %d (%v)", name, rise, want[name], inv.Examples)
		}
		examples = append(examples, inv.Examples...)
	}
	for name := range want {
		if _, ok := after[name]; !ok {
			t.Errorf("no invariant named %q", name)
		}
	}
	all := strings.Join(examples, "\n")
	for _, s := range says {
		if !strings.Contains(all, s) {
			t.Errorf("no example says %q: %q", s, examples)
		}
	}
}

// TestCheckCommittedBeforeThe2xx: right after a 2xx, and after an
// outage, only a notification (or a move to SUCCESS) written by the 2xx
// counts; one a redelivery wrote later does not hide the loss.
func TestCheckCommittedBeforeThe2xx(t *testing.T) {
	store := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	db, err := store.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	paidInLedger(t, store, "n-C1", "C1")
	d := &driver{w: &world{sql: db}}
	o := &order{no: "C1"}
	if d.checkCommitted(ctx, o, "n-C1"); len(d.uncommitted) != 0 {
		t.Fatalf("committed before the 2xx, yet uncommitted %v", d.uncommitted)
	}
	// As if a concurrent duplicate wrote both rows half a second after
	// the 2xx, which came before any commit.
	for _, q := range []string{"UPDATE notifications SET received_at = received_at + INTERVAL 500000 MICROSECOND",
		"UPDATE state_history SET created_at = created_at + INTERVAL 500000 MICROSECOND"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	d.checkCommitted(ctx, o, "n-C1")
	d.deferred = []deferredCheck{{no: "C1", id: "n-C1", at: time.Now()}}
	if n, err := d.recheckDeferred(ctx); err != nil || n != 1 {
		t.Fatalf("recheckDeferred: %d, %v", n, err)
	}
	if want := []string{"C1", "C1 (checked after the outage)"}; fmt.Sprint(d.uncommitted) != fmt.Sprint(want) {
		t.Errorf("uncommitted %q, want %q", d.uncommitted, want)
	}
}

// TestOverRefundedCountsUnsettledRefunds: money a refund not yet final
// holds (ABNORMAL, PROCESSING, UNKNOWN) counts against what was paid, as
// a SUCCESS does; a CLOSED or FAILED refund gave it back.
func TestOverRefundedCountsUnsettledRefunds(t *testing.T) {
	for _, tc := range []struct {
		second string
		want   int
	}{{"ABNORMAL", 1}, {"PROCESSING", 1}, {"FAILED", 0}, {"CLOSED", 0}} {
		s := ledgertest.OpenMySQL(t)
		ctx := context.Background()
		paidInLedger(t, s, "n-O1", "O1")
		db, err := s.DB().DB()
		if err != nil {
			t.Fatal(err)
		}
		for no, state := range map[string]string{"RO1": "SUCCESS", "RO2": tc.second} {
			if _, err := db.ExecContext(ctx, `INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total,
				requester, created_at, updated_at) VALUES (?, 'O1', ?, 60, 100, 'o', ?, ?)`, no, state, time.Now(), time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		inv, err := overRefunded(&Evidence{Ctx: ctx, DB: db})
		if err != nil {
			t.Fatal(err)
		}
		if inv.Count != tc.want {
			t.Errorf("SUCCESS 60 + %s 60 of 100 paid: %d over-refunded orders %v, want %d", tc.second, inv.Count, inv.Examples, tc.want)
		}
	}
}

// TestOverRefundedCountsRefundsOfUnknownOrders: a refund of an order the
// ledger has no payment for exceeds what was paid (nothing) unless it gave
// the money back (CLOSED, FAILED).
func TestOverRefundedCountsRefundsOfUnknownOrders(t *testing.T) {
	ctx := context.Background()
	db, err := ledgertest.OpenMySQL(t).DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	for no, state := range map[string]string{"G1": "SUCCESS", "G2": "PROCESSING", "G3": "FAILED", "G4": "CLOSED"} {
		if _, err := db.ExecContext(ctx, `INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total,
			requester, created_at, updated_at) VALUES (?, ?, ?, 60, 100, 'o', ?, ?)`, "R"+no, no, state, time.Now(),
			time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := overRefunded(&Evidence{Ctx: ctx, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(inv.Examples, ","); inv.Count != 2 || !strings.Contains(got, "ledger: G1") ||
		!strings.Contains(got, "ledger: G2") {
		t.Errorf("refunds of orders without a payment: %d over-refunded orders %v, want G1 and G2", inv.Count, inv.Examples)
	}
}

// TestStockEffectsOfSkippedConfirmations: an order whose confirmation the
// gateway skipped (refunded in full first) needs no confirmation and its
// refund no release; a skip the refunds do not cover, or a confirmation
// the inventory holds despite the skip, is a violation.
func TestStockEffectsOfSkippedConfirmations(t *testing.T) {
	for _, tc := range []struct {
		name      string
		refunded  int64
		confirmed bool
		want      int
	}{{"refunded in full, unsent", 100, false, 0}, {"refunded in part", 60, false, 1}, {"confirmed anyway", 100, true, 1}} {
		s := ledgertest.OpenMySQL(t)
		ctx := context.Background()
		paidInLedger(t, s, "n-K1", "K1")
		db, err := s.DB().DB()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total, requester, created_at, updated_at)
				VALUES ('RK1', 'K1', 'SUCCESS', ?, 100, 'o', ?, ?)`, []any{tc.refunded, now, now}},
			{`UPDATE outbox_jobs SET state = 'DONE', attempts = 1 WHERE out_trade_no = 'K1'`, nil},
			{`INSERT INTO outbox_attempts (job_id, attempt, worker, outcome, started_at, finished_at)
				SELECT id, 1, 'w', 'skipped', ?, ? FROM outbox_jobs WHERE out_trade_no = 'K1'`, []any{now, now}},
		} {
			if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
				t.Fatal(err)
			}
		}
		inv := inventorysim.New()
		if tc.confirmed {
			req := httptest.NewRequest("POST", "/confirmations", strings.NewReader(`{"key":"confirm:K1","out_trade_no":"K1","amount_total":100}`))
			req.Header.Set("Idempotency-Key", "confirm:K1")
			req.Header.Set("Content-Type", "application/json")
			inv.Handler().ServeHTTP(httptest.NewRecorder(), req)
		}
		got, err := stockEffects(&Evidence{Ctx: ctx, DB: db, Inv: inv})
		if err != nil {
			t.Fatal(err)
		}
		if got.Count != tc.want {
			t.Errorf("%s: %d stock violations %v, want %d", tc.name, got.Count, got.Examples, tc.want)
		}
	}
}

// paidInLedger records order no paid (100 fen, transaction "42"+no) as its
// notification id would.
func paidInLedger(t *testing.T, s *ledger.Store, id, no string) {
	t.Helper()
	u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: id, Source: ledger.SourceCallback,
		EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource", OutTradeNo: no, Plaintext: "{}"},
		OutTradeNo: no, TransactionID: "42" + no, TradeState: "SUCCESS", AmountTotal: 100, PayerTotal: 100,
		SuccessTime: time.Now()}
	if _, err := s.ApplyTransaction(context.Background(), u); err != nil {
		t.Fatal(err)
	}
}
