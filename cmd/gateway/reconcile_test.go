package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/daytest"
	"paygateway/ledger/ledgertest"
)

// reconcileStack is a gateway wired to a WeChat Pay simulator that sends
// it notifications and serves it trade bills.
type reconcileStack struct {
	m       *Main
	sim     *wxpaysim.Sim
	wx      *wechatpay.Client
	handler *atomic.Value // what answers as WeChat Pay: the simulator, or a test's stand-in
}

// handlerBox holds any handler in an atomic.Value (which wants one type).
type handlerBox struct{ http.Handler }

// startReconcileStack runs the gateway on a clock one day ahead of the
// simulator's, so that the payments a test makes now are in a past day's
// bill: the gateway refuses to reconcile today.
func startReconcileStack(t *testing.T, b backend) *reconcileStack {
	t.Helper()
	dbTime = func(c *ledger.DBClock) func() time.Time {
		return func() time.Time { return c.Now().Add(24 * time.Hour) }
	}
	t.Cleanup(func() { dbTime = func(c *ledger.DBClock) func() time.Time { return c.Now } })
	k, dir := testKeys(t)
	var handler atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(handlerBox).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(t, b)
	w := &cfg.WechatPay
	w.MerchantSerial, w.MerchantPrivateKeyFile = k.MerchantSerial, filepath.Join(dir, "merchant_private_key.pem")
	w.BaseURL = srv.URL
	cfg.Finance.DailyReconcileAt = "off"
	// The simulator's payments are a day older than the gateway's clock,
	// so the ledger's first payment (the take-over when this is unset)
	// would come after them all.
	cfg.Finance.ReconcileFrom = "2020-01-01"
	m := startGateway(t, cfg)
	sim := wxpaysim.New(k, wxpaysim.Options{NotifyURL: m.URL() + paymentPath, NotifyRetryDelays: []time.Duration{}})
	t.Cleanup(sim.Close)
	handler.Store(handlerBox{sim.Handler()})
	wx, err := newWechatClient(context.Background(), cfg.WechatPay)
	if err != nil || wx == nil {
		t.Fatalf("wechat client: %v", err)
	}
	return &reconcileStack{m: m, sim: sim, wx: wx, handler: &handler}
}

func (s *reconcileStack) reconcile(t *testing.T, day string) ledger.Reconciliation {
	t.Helper()
	status, body := apiCall(t, "POST", s.m.URL()+"/v1/reconciliations", financeKey, map[string]string{"date": day})
	if status != 200 {
		t.Fatalf("reconcile: status=%d body=%v", status, body)
	}
	raw, _ := json.Marshal(body)
	var rep ledger.Reconciliation
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func kinds(rep ledger.Reconciliation) []string {
	var out []string
	for _, it := range rep.Items {
		out = append(out, it.Kind+":"+it.OutTradeNo+":"+it.OutRefundNo)
	}
	return out
}

// TestReconciliation: a clean day reports zero mismatches; each injected
// bill difference is reported exactly; a payment the ledger missed is
// repaired through the state machine and a rerun is clean.
func TestReconciliation(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := startReconcileStack(t, b)
			ctx := context.Background()
			daytest.AwayFromMidnight(t, time.Minute)
			day := ledger.DayOf(time.Now())
			var nos []string
			for i, amount := range []int64{1000, 2500, 399} {
				no := uniqueNo("rc")
				nos = append(nos, no)
				if _, err := s.sim.Pay(ctx, no, amount, "openid-rc", false); err != nil {
					t.Fatal(err)
				}
				if p, err := s.m.Store.Payment(ctx, no); err != nil || p.State != ledger.PaymentSuccess {
					t.Fatalf("payment %d not recorded: %v %v", i, p, err)
				}
			}
			// A real refund, settled at WeChat and recorded in the ledger.
			rf, err := s.wx.CreateRefund(ctx, wechatpay.RefundRequest{OutTradeNo: nos[0], OutRefundNo: "RF" + nos[0], Amount: 300, Total: 1000})
			if err != nil {
				t.Fatal(err)
			}
			s.sim.SettleRefunds()
			insertRefund(t, s.m, nos[0], rf.OutRefundNo, 300, "SUCCESS", time.Now().UTC())

			clean := s.reconcile(t, day)
			if clean.Status != ledger.ReconcileMatched || clean.Mismatches != 0 || len(clean.Items) != 0 ||
				clean.BillPayments != 3 || clean.BillRefunds != 1 || clean.BillPaid != 3899 || clean.LedgerPaid != 3899 {
				t.Fatalf("clean day: %+v", clean)
			}

			cases := []struct {
				name   string
				faults wxpaysim.BillFaults
				want   string
			}{
				{"missing row", wxpaysim.BillFaults{DropOutTradeNo: nos[1]}, ledger.MismatchPaymentMissingInBill + ":" + nos[1] + ":"},
				{"changed amount", wxpaysim.BillFaults{ChangeAmount: map[string]int64{nos[2]: 398}}, ledger.MismatchPaymentAmount + ":" + nos[2] + ":"},
				{"extra refund", wxpaysim.BillFaults{ExtraRefund: &wxpaysim.BillRefund{OutTradeNo: nos[1], OutRefundNo: "RX" + nos[1], Amount: 100}},
					ledger.MismatchRefundMissingInLedger + ":" + nos[1] + ":RX" + nos[1]},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					s.sim.SetBillFaults(tc.faults)
					defer s.sim.SetBillFaults(wxpaysim.BillFaults{})
					rep := s.reconcile(t, day)
					if got := kinds(rep); len(got) != 1 || got[0] != tc.want || rep.Status != ledger.ReconcileMismatched {
						t.Fatalf("mismatches = %v, want [%s]", got, tc.want)
					}
					it := rep.Items[0]
					if tc.name == "changed amount" && (it.Bill.Amount != 398 || it.Ledger.Amount != 399) {
						t.Fatalf("both sides: bill %+v ledger %+v", it.Bill, it.Ledger)
					}
				})
			}

			// A payment whose notification never arrived is repaired.
			lost := uniqueNo("rl")
			tx, err := s.sim.Pay(ctx, lost, 777, "openid-rl", true)
			if err != nil {
				t.Fatal(err)
			}
			rep := s.reconcile(t, day)
			if got := kinds(rep); len(got) != 1 || got[0] != ledger.MismatchPaymentMissingInLedger+":"+lost+":" ||
				rep.Items[0].Repair != ledger.RepairApplied || rep.Repaired != 1 || rep.Items[0].Ledger != nil {
				t.Fatalf("lost payment: %v %+v", got, rep.Items)
			}
			p, err := s.m.Store.Payment(ctx, lost)
			if err != nil || p.State != ledger.PaymentSuccess || p.AmountTotal != 777 || p.TransactionID != tx.TransactionID {
				t.Fatalf("repaired payment = %+v, %v", p, err)
			}
			history, _ := s.m.Store.History(ctx, lost)
			if len(history) != 1 || history[0].Source != ledger.SourceReconcile || history[0].Ref != "reconcile:"+tx.TransactionID {
				t.Fatalf("history = %+v", history)
			}
			// A rerun still reports the repair: the payment was missing.
			again := s.reconcile(t, day)
			if got := kinds(again); len(got) != 1 || got[0] != ledger.MismatchPaymentMissingInLedger+":"+lost+":" ||
				again.Items[0].Repair != ledger.RepairApplied || again.Repaired != 1 ||
				again.Status != ledger.ReconcileMismatched || again.Runs < 2 {
				t.Fatalf("rerun: %v %+v", got, again)
			}

			// The stored report is served as JSON and CSV.
			s.sim.SetBillFaults(wxpaysim.BillFaults{DropOutTradeNo: nos[1]})
			s.reconcile(t, day)
			s.sim.SetBillFaults(wxpaysim.BillFaults{})
			_, body := apiCall(t, "GET", s.m.URL()+"/v1/reconciliations/"+day, financeKey, nil)
			if body["status"] != ledger.ReconcileMismatched || body["mismatches"] != float64(2) || body["repaired"] != float64(1) {
				t.Fatalf("stored report: %v", body)
			}
			status, raw, _ := getRaw(t, s.m.URL()+"/v1/reconciliations/"+day+"?format=csv", financeKey, "")
			recs, err := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
			field := func(kind string, i int) string { // column i of the row of kind
				for _, rec := range recs {
					if rec[1] == kind && len(rec) > i {
						return rec[i]
					}
				}
				return ""
			}
			if status != 200 || err != nil || len(recs) != 3 || field(ledger.MismatchPaymentMissingInBill, 8) != "2500" ||
				field(ledger.MismatchPaymentMissingInLedger, 9) != ledger.RepairApplied {
				t.Fatalf("csv report: %d %v %q", status, err, raw)
			}
			if status, _ := apiCall(t, "GET", s.m.URL()+"/v1/reconciliations/2001-01-01", financeKey, nil); status != 404 {
				t.Fatalf("unknown day status=%d", status)
			}
			if status, _ := apiCall(t, "POST", s.m.URL()+"/v1/reconciliations", serviceKey, map[string]string{"date": day}); status != 403 {
				t.Fatalf("service key reconcile status=%d", status)
			}
		})
	}
}

// TestReconcileEmptyDay: WeChat's NO_STATEMENT_EXIST is a day with no rows
// (stored NO_BILL, run again while recent) only when the ledger has
// nothing settled that day either; otherwise the bill is not generated yet
// and the run fails, storing nothing.
func TestReconcileEmptyDay(t *testing.T) {
	s := startReconcileStack(t, backends[0])
	rep := s.reconcile(t, "2020-02-02")
	if rep.Status != ledger.ReconcileNoBill || rep.BillPayments != 0 || rep.Mismatches != 0 {
		t.Fatalf("empty day: %+v", rep)
	}
	no := uniqueNo("ne")
	paid := time.Date(2020, 2, 3, 12, 0, 0, 0, ledger.BusinessDay)
	_, err := s.m.Store.ApplyTransaction(context.Background(), ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS",
			OutTradeNo: no, TransactionID: "42" + no, CreateTime: paid},
		OutTradeNo: no, TransactionID: "42" + no, TradeState: "SUCCESS", AmountTotal: 100, PayerTotal: 100,
		Currency: "CNY", SuccessTime: paid.UTC()})
	if err != nil {
		t.Fatal(err)
	}
	status, body := apiCall(t, "POST", s.m.URL()+"/v1/reconciliations", financeKey, map[string]string{"date": "2020-02-03"})
	if status != 503 || body["code"] != "EUNAVAILABLE" {
		t.Fatalf("no bill for a day with payments: status=%d body=%v", status, body)
	}
	if status, _ := apiCall(t, "GET", s.m.URL()+"/v1/reconciliations/2020-02-03", financeKey, nil); status != 404 {
		t.Fatalf("a day without its bill got a report: status=%d", status)
	}
	// "No bill" that WeChat Pay did not sign (a proxy's) settles nothing.
	sim := s.handler.Load()
	s.handler.Store(handlerBox{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"code":"NO_STATEMENT_EXIST","message":"no bill"}`))
	})})
	status, body = apiCall(t, "POST", s.m.URL()+"/v1/reconciliations", financeKey, map[string]string{"date": "2020-02-04"})
	s.handler.Store(sim)
	if status != 503 || body["code"] != "EUNAVAILABLE" {
		t.Fatalf("unsigned no-bill answer: status=%d body=%v, want the run to fail", status, body)
	}
	if status, _ := apiCall(t, "GET", s.m.URL()+"/v1/reconciliations/2020-02-04", financeKey, nil); status != 404 {
		t.Fatalf("an unsigned no-bill answer stored a report: status=%d", status)
	}
}

// TestFailingReconciliationShowsAsPending: a day whose run fails (WeChat
// Pay refuses the bill download, as it does a wrong merchant key) stores
// no report and is counted in gateway_reconciliation_days{status="PENDING"}
// until a run succeeds: the series the README has the on-call alert on
// when reconciliation fails day after day.
func TestFailingReconciliationShowsAsPending(t *testing.T) {
	s := startReconcileStack(t, backends[0])
	s.handler.Store(handlerBox{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"SIGN_ERROR","message":"signature invalid"}`))
	})})
	status, body := apiCall(t, "POST", s.m.URL()+"/v1/reconciliations", financeKey, map[string]string{"date": "2020-03-01"})
	if status != 503 {
		t.Fatalf("refused bill download: status=%d body=%v, want the run to fail", status, body)
	}
	if v := scrape(t, s.m.URL(), `gateway_reconciliation_days{status="PENDING"}`); v != 1 {
		t.Fatalf(`gateway_reconciliation_days{status="PENDING"} = %v after a failed run, want 1`, v)
	}
}

// TestReconcileRefusesOpenDays: today's bill does not exist yet, so today
// and later days are refused with a stable code.
func TestReconcileRefusesOpenDays(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute) // today must still be today when the gateway reads the date
	s := startReconcileStack(t, backends[0])
	today := s.m.Store.Now()
	for _, day := range []string{ledger.DayOf(today), ledger.DayOf(today.Add(48 * time.Hour))} {
		status, body := apiCall(t, "POST", s.m.URL()+"/v1/reconciliations", financeKey, map[string]string{"date": day})
		if status != 400 || body["code"] != "EDAY_NOT_OVER" {
			t.Fatalf("reconcile %s: status=%d body=%v", day, status, body)
		}
	}
}

// TestReconciliationLearnsWhenWeChatAcceptedARefund: a refund the ledger
// recorded just before midnight and learnt was paid from a notification
// only (which does not say when WeChat accepted it) is in the next day's
// bill. The run of its recording day asks WeChat Pay, keeps the answer,
// and reports nothing missing (that day has nothing else: its bill does
// not exist, and it is not taken for a bill not out yet); the next day
// counts it.
func TestReconciliationLearnsWhenWeChatAcceptedARefund(t *testing.T) {
	s := startReconcileStack(t, backends[1])
	ctx := context.Background()
	no := uniqueNo("ra")
	if _, err := s.sim.Pay(ctx, no, 1000, "openid-ra", false); err != nil {
		t.Fatal(err)
	}
	rf, err := s.wx.CreateRefund(ctx, wechatpay.RefundRequest{OutTradeNo: no, OutRefundNo: "RA" + no, Amount: 300, Total: 1000})
	if err != nil {
		t.Fatal(err)
	}
	s.sim.SettleRefunds()
	day := ledger.DayOf(rf.CreateTime)
	start, _ := ledger.DayStart(day)
	insertRefund(t, s.m, no, rf.OutRefundNo, 300, "SUCCESS", start.Add(-time.Minute))
	before := ledger.DayOf(start.Add(-time.Minute))

	if rep := s.reconcile(t, before); rep.Mismatches != 0 || rep.LedgerRefunds != 0 {
		t.Fatalf("the day the refund was recorded: %+v", rep)
	}
	r, err := s.m.Store.Refund(ctx, rf.OutRefundNo)
	if err != nil || r.AcceptedAt == nil || !r.AcceptedAt.Equal(rf.CreateTime.Truncate(time.Second)) {
		t.Fatalf("refund %+v (%v), want accepted at WeChat's %v", r, err, rf.CreateTime)
	}
	if rep := s.reconcile(t, day); rep.Mismatches != 0 || rep.LedgerRefunds != 1 || rep.BillRefunds != 1 {
		t.Fatalf("the day WeChat accepted it: %+v", rep)
	}
}

// TestBillRowsAreConfirmedAtWechat: before a repair, the bill's row is
// checked against WeChat Pay's signed answer to an order query: a paid
// order with the row's transaction, amount, app, payer and time (its
// success_time, within a second) confirms it; another amount, payer,
// merchant, currency or time, an order not paid, or one WeChat Pay does
// not know does not.
// An order refunded since (trade_state REFUND) confirms it, refunded. The
// answer's payer_total (less than the total by a coupon) is what the
// repair records as paid by the payer, which the bill does not say.
func TestBillRowsAreConfirmedAtWechat(t *testing.T) {
	s := startReconcileStack(t, backends[0])
	ctx := context.Background()
	paid, unpaid := uniqueNo("cfp"), uniqueNo("cfu")
	if err := s.sim.SetCoupon(paid, 500, 120); err != nil {
		t.Fatal(err)
	}
	tx, err := s.sim.Pay(ctx, paid, 500, "o-"+paid, true)
	if err != nil {
		t.Fatal(err)
	}
	paidAt, err := time.Parse(time.RFC3339, tx.SuccessTime)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sim.RegisterOrder(unpaid, 700); err != nil {
		t.Fatal(err)
	}
	k, _ := testKeys(t)
	row := func(no, txID string, amount int64) ledger.BillPayment {
		return ledger.BillPayment{Time: paidAt.UTC(), OutTradeNo: no, TransactionID: txID, Amount: amount, AppID: k.AppID,
			MchID: k.MchID, OpenID: "o-" + paid, Currency: "CNY"}
	}
	otherPayer := row(paid, tx.TransactionID, 500)
	otherPayer.OpenID = "o-someone-else"
	otherMerchant := row(paid, tx.TransactionID, 500)
	otherMerchant.MchID = "1900009999"
	otherCurrency := row(paid, tx.TransactionID, 500)
	otherCurrency.Currency = "USD"
	check := paidAtWechat{s.wx}.confirm
	if c, err := check(ctx, row(paid, tx.TransactionID, 500)); err != nil || c.Refunded || c.PayerTotal != 380 {
		t.Fatalf("the real row: %+v %v, want not refunded, 380 fen paid by the payer (a coupon paid 120)", c, err)
	}
	rounded := row(paid, tx.TransactionID, 500)
	rounded.Time = rounded.Time.Add(time.Second)
	if _, err := check(ctx, rounded); err != nil {
		t.Fatalf("the real row a second off (rounding): %v", err)
	}
	for _, shift := range []time.Duration{-2 * time.Second, 2 * time.Second, 48 * time.Hour} {
		moved := row(paid, tx.TransactionID, 500)
		moved.Time = moved.Time.Add(shift)
		if _, err := check(ctx, moved); !errors.Is(err, ledger.ErrBillUnconfirmed) || !strings.Contains(err.Error(), "success_time") {
			t.Errorf("the real row moved %v: err = %v, want unconfirmed naming success_time", shift, err)
		}
	}
	if _, err := s.wx.CreateRefund(ctx, wechatpay.RefundRequest{OutTradeNo: paid, OutRefundNo: "R" + paid, Amount: 100, Total: 500}); err != nil {
		t.Fatal(err)
	}
	if c, err := check(ctx, row(paid, tx.TransactionID, 500)); err != nil || !c.Refunded {
		t.Fatalf("the real row, refunded since: %+v %v", c, err)
	}
	for _, bad := range []ledger.BillPayment{row(paid, tx.TransactionID, 50000), row(paid, "4200FAKE", 500),
		row(unpaid, "4200FAKE", 700), row(uniqueNo("cfn"), "4200FAKE", 100), otherPayer, otherMerchant, otherCurrency} {
		if _, err := check(ctx, bad); !errors.Is(err, ledger.ErrBillUnconfirmed) {
			t.Errorf("forged row %+v: err = %v, want unconfirmed", bad, err)
		}
	}
}

// TestBillRowConfirmedOnlyByItsOwnOrder: a signed answer about another
// order (a replayed or misrouted one) confirms nothing, however well the
// rest of it matches the row.
func TestBillRowConfirmedOnlyByItsOwnOrder(t *testing.T) {
	paidAt := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	row := ledger.BillPayment{Time: paidAt, OutTradeNo: "order-x", TransactionID: "4200000001", Amount: 500,
		AppID: "wxapp", MchID: "1900000001", OpenID: "o-x", Currency: "CNY"}
	answer := wechatpay.Transaction{OutTradeNo: "order-x", TransactionID: "4200000001", TradeState: "SUCCESS",
		AppID: "wxapp", MchID: "1900000001", PayerOpenID: "o-x", AmountTotal: 500, PayerTotal: 500, Currency: "CNY",
		SuccessTime: paidAt}
	if _, err := (paidAtWechat{fixedAnswer(answer)}).confirm(context.Background(), row); err != nil {
		t.Fatalf("the answer about the row's order: %v", err)
	}
	answer.OutTradeNo = "order-y"
	if _, err := (paidAtWechat{fixedAnswer(answer)}).confirm(context.Background(), row); !errors.Is(err, ledger.ErrBillUnconfirmed) ||
		!strings.Contains(err.Error(), "order-y") {
		t.Fatalf("an answer about another order: err = %v, want unconfirmed naming it", err)
	}
}

// TestSignedRefusalOfOneRowLeavesTheOthers: WeChat Pay refuses, signed,
// the order query of one bill row (400 PARAM_ERROR): that row is refused,
// and the payment after it is still repaired. A refusal about the
// merchant's rights (403) or this client (415), an unsigned one and an
// outage fail the run, to be run again, as before.
func TestSignedRefusalOfOneRowLeavesTheOthers(t *testing.T) {
	paidAt := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	row := func(no string) ledger.BillPayment {
		return ledger.BillPayment{Time: paidAt, OutTradeNo: no, TransactionID: "4200" + no, Amount: 500,
			AppID: "wxapp", MchID: "1900000001", OpenID: "o-" + no, Currency: "CNY", Line: "`row of " + no}
	}
	refusal := func(status int, signed bool) error {
		return fmt.Errorf("query order: %w", &wechatpay.BusinessError{Status: status, Code: "PARAM_ERROR", Message: "bad", Verified: signed})
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for i, failure := range []error{refusal(400, true), refusal(403, true), refusal(415, true), refusal(400, false),
			wechatpay.ErrUnknownOutcome} {
			bad, good := fmt.Sprintf("rr-bad-%d", i), fmt.Sprintf("rr-good-%d", i)
			wx := orderAnswers{bad: {err: failure}, good: {tx: &wechatpay.Transaction{OutTradeNo: good, TransactionID: "4200" + good,
				TradeState: "SUCCESS", AppID: "wxapp", MchID: "1900000001", PayerOpenID: "o-" + good, AmountTotal: 500,
				PayerTotal: 500, Currency: "CNY", SuccessTime: paidAt}}}
			claim, err := s.ClaimReconciliation(ctx, ledger.DayOf(paidAt), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := s.Reconcile(ctx, claim, &ledger.Bill{Payments: []ledger.BillPayment{row(bad), row(good)},
				AppID: "wxapp", Confirm: paidAtWechat{wx}.confirm}, "test")
			_, perr := s.Payment(ctx, good)
			if i > 0 { // not the row's own refusal: the run fails, nothing repaired
				if err == nil || !errors.Is(perr, ledger.ErrNotFound) {
					t.Fatalf("%v: run %+v, %v; payment %v; want the run failed, nothing repaired", failure, rep, err, perr)
				}
				if err := s.ReleaseReconciliation(ctx, claim); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err != nil || len(rep.Items) != 2 || perr != nil {
				t.Fatalf("%v: run %+v, %v; payment after it: %v; want both rows reported, the second repaired", failure, rep, err, perr)
			}
			for _, it := range rep.Items {
				if it.OutTradeNo == bad && (it.Repair != ledger.RepairRefused || !strings.Contains(it.RepairDetail, "PARAM_ERROR")) {
					t.Fatalf("the refused row: %+v, want REFUSED naming PARAM_ERROR", it)
				}
			}
		}
	})
}

// orderAnswers answers each order's query with its entry.
type orderAnswers map[string]struct {
	tx  *wechatpay.Transaction
	err error
}

func (o orderAnswers) QueryOrder(_ context.Context, no string) (*wechatpay.Transaction, error) {
	a, ok := o[no]
	if !ok {
		return nil, wechatpay.ErrNotFound
	}
	return a.tx, a.err
}

// fixedAnswer answers every order query with one transaction.
type fixedAnswer wechatpay.Transaction

func (f fixedAnswer) QueryOrder(context.Context, string) (*wechatpay.Transaction, error) {
	tx := wechatpay.Transaction(f)
	return &tx, nil
}

// TestTakeOverIsDecidedOnWeChatsTime: a payment the old system took before
// the take-over is DEFERRED. A crafted bill row naming the same order with
// a time after the take-over is not confirmed (WeChat Pay's success_time
// is not the row's), so it is REFUSED: the order is not recorded and its
// stock is not confirmed a second time.
func TestTakeOverIsDecidedOnWeChatsTime(t *testing.T) {
	s := startReconcileStack(t, backends[0])
	ctx := context.Background()
	k, _ := testKeys(t)
	old := uniqueNo("old")
	tx, err := s.sim.Pay(ctx, old, 500, "o-"+old, true) // the old system's: the gateway never hears of it
	if err != nil {
		t.Fatal(err)
	}
	paidAt, err := time.Parse(time.RFC3339, tx.SuccessTime)
	if err != nil {
		t.Fatal(err)
	}
	takeOver := paidAt.Add(time.Hour).UTC()
	row := ledger.BillPayment{Time: paidAt.UTC(), OutTradeNo: old, TransactionID: tx.TransactionID, Amount: 500,
		AppID: k.AppID, MchID: k.MchID, OpenID: "o-" + old, Currency: "CNY", Line: "`row of " + old}
	run := func(bp ledger.BillPayment) ledger.ReconcileItem {
		t.Helper()
		claim, err := s.m.Store.ClaimReconciliation(ctx, ledger.DayOf(bp.Time), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := s.m.Store.Reconcile(ctx, claim, &ledger.Bill{Payments: []ledger.BillPayment{bp}, TakeOver: takeOver,
			AppID: k.AppID, Confirm: paidAtWechat{s.wx}.confirm}, "test")
		if err != nil || len(rep.Items) != 1 {
			t.Fatalf("run: %+v, %v", rep, err)
		}
		return rep.Items[0]
	}
	if it := run(row); it.Repair != ledger.RepairDeferred {
		t.Fatalf("the row as WeChat Pay has it: %+v, want DEFERRED", it)
	}
	moved := row
	moved.Time = takeOver.Add(48 * time.Hour)
	if it := run(moved); it.Repair != ledger.RepairRefused || !strings.Contains(it.RepairDetail, "success_time") {
		t.Fatalf("the row moved past the take-over: %+v, want REFUSED naming success_time", it)
	}
	if p, err := s.m.Store.Payment(ctx, old); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("the old system's payment was recorded: %+v, %v", p, err)
	}
	if jobs, _ := s.m.Store.Outbox().JobsOf(ctx, old); len(jobs) != 0 {
		t.Fatalf("stock confirmation queued for the old system's payment: %+v", jobs)
	}
}

// TestWechatClientRefusesPlainHTTPOffHost: the client the admin commands
// build (gateway reconcile) without the server's whole validation still
// refuses plain HTTP to another host, which would let anyone on the path
// answer for WeChat Pay and read the bills; a simulator on this host is fine.
func TestWechatClientRefusesPlainHTTPOffHost(t *testing.T) {
	k, dir := testKeys(t)
	w := testConfig(t, backends[0]).WechatPay
	w.MerchantSerial, w.MerchantPrivateKeyFile = k.MerchantSerial, filepath.Join(dir, "merchant_private_key.pem")
	for url, ok := range map[string]bool{"http://10.0.0.1:8080": false, "http://api.mch.weixin.qq.com": false,
		"https://api.mch.weixin.qq.com": true, "http://127.0.0.1:8081": true} {
		w.BaseURL = url
		c, err := newWechatClient(context.Background(), w)
		if ok != (err == nil && c != nil) || !ok && !strings.Contains(fmt.Sprint(err), "wechatpay.base_url") {
			t.Errorf("%s: client %v, err %v; want allowed=%v", url, c != nil, err, ok)
		}
	}
}

// TestReconcileCommandChecksTheConfig: `gateway reconcile` checks the
// whole config before it asks WeChat Pay for anything, as serve does.
// Before, it built its client from the settings as they were: an appid
// copied with a space (which every bill row is compared with) or a
// merchant serial with a newline went to WeChat Pay.
func TestReconcileCommandChecksTheConfig(t *testing.T) {
	k, dir := testKeys(t)
	var asked atomic.Int64
	wx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Error(w, "{}", http.StatusInternalServerError)
	}))
	t.Cleanup(wx.Close)
	t.Setenv("GATEWAY_CONFIG", "")
	t.Setenv("GATEWAY_DATABASE_DSN", filepath.Join(t.TempDir(), "reconcile.db"))
	if err := run([]string{"migrate"}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	for name, value := range map[string]string{"MCHID": k.MchID, "APIV3_KEY": k.APIv3Key, "BASE_URL": wx.URL,
		"PUBLIC_KEY_FILE": filepath.Join(dir, "platform_public_key.pem"), "PUBLIC_KEY_ID": k.PublicKeyID,
		"MERCHANT_SERIAL": k.MerchantSerial, "MERCHANT_PRIVATE_KEY_FILE": filepath.Join(dir, "merchant_private_key.pem")} {
		t.Setenv("GATEWAY_WECHATPAY_"+name, value)
	}
	for variable, edged := range map[string]string{"GATEWAY_WECHATPAY_APPID": " " + k.AppID,
		"GATEWAY_WECHATPAY_MERCHANT_SERIAL": k.MerchantSerial + "\n"} {
		t.Setenv("GATEWAY_WECHATPAY_APPID", k.AppID)
		t.Setenv("GATEWAY_WECHATPAY_MERCHANT_SERIAL", k.MerchantSerial)
		t.Setenv(variable, edged)
		err := run([]string{"reconcile", "--date", "2026-11-01"})
		if err == nil || !strings.Contains(err.Error(), variable) {
			t.Errorf("%s edged with white space: err = %v, want a refusal naming it", variable, err)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("WeChat Pay was asked %d times by a refused command", n)
	}
}
