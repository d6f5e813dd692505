package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// rfKeysDir holds fixed WeChat Pay test keys (the verifier's fuzz keys):
// loading them is cheaper than generating 2048-bit keys per test.
const rfKeysDir = "wechatpay/testdata/fuzzkeys"

// rfEdge is the gateway's HTTP edge for WeChat Pay's notifications, with
// the real verifier, on a ledger store.
type rfEdge struct {
	keys    *wxpaysim.Keys
	store   *ledger.Store
	router  http.Handler
	batches chan [2]int // size, batched (1/0) of each commit
}

func newRFEdge(t *testing.T, keys *wxpaysim.Keys, s *ledger.Store, batchMax int) *rfEdge {
	t.Helper()
	v, err := wechatpay.NewVerifier(wechatpay.NotifyConfig{APIv3Key: keys.APIv3Key, PublicKeyID: keys.PublicKeyID,
		PublicKey: keys.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	e := &rfEdge{keys: keys, store: s, batches: make(chan [2]int, 100)}
	locks := gateway.NewMemoryLocker()
	p := gateway.NewProcessor(gateway.ProcessorConfig{MchID: keys.MchID, AppID: keys.AppID, BatchWorkers: 1, BatchMax: batchMax,
		BatchObserve: func(size int, batched bool) {
			b := 0
			if batched {
				b = 1
			}
			e.batches <- [2]int{size, b}
		}}, v, gateway.NewMemoryGate(1000, locks), locks, s)
	t.Cleanup(func() { _ = p.Close() })
	gin.SetMode(gin.TestMode)
	e.router = gateway.NewRouter(gateway.Deps{Processor: p, Store: s, Routes: []func(*gin.Engine, *gateway.Deps){gateway.RefundNotifyRoute}})
	return e
}

func rfKeys(t *testing.T) *wxpaysim.Keys {
	t.Helper()
	k, err := wxpaysim.LoadKeys(rfKeysDir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// post delivers n (signed anew: a redelivery) and returns the status.
func (e *rfEdge) post(t *testing.T, path string, n wxpaysim.Notification) int {
	t.Helper()
	n, err := n.Resign(e.keys, wxpaysim.PublicKeyMode(), time.Now())
	if err != nil {
		t.Error(err)
		return 0
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/wechatpay/notify/"+path, bytes.NewReader(n.Body))
	req.Header = n.Header.Clone()
	w := httptest.NewRecorder()
	e.router.ServeHTTP(w, req)
	if w.Code != http.StatusNoContent {
		t.Logf("POST %s %s: %d %s", path, n.EventType, w.Code, w.Body)
	}
	return w.Code
}

func rfPaymentNotice(t *testing.T, k *wxpaysim.Keys, no, tradeState string) wxpaysim.Notification {
	t.Helper()
	n, err := k.PaymentNotification(wxpaysim.Transaction{AppID: k.AppID, MchID: k.MchID, OutTradeNo: no,
		TransactionID: "42000" + no, TradeType: "JSAPI", TradeState: tradeState, TradeStateDesc: "paid", BankType: "OTHERS",
		SuccessTime: "2025-01-15T10:00:00+08:00", Payer: &wxpaysim.Payer{OpenID: "o-" + no},
		Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100, Currency: "CNY", PayerCurrency: "CNY"}},
		wxpaysim.PublicKeyMode(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func rfRefundNotice(t *testing.T, k *wxpaysim.Keys, no, outRefundNo string) wxpaysim.Notification {
	t.Helper()
	n, err := k.RefundNotification(wxpaysim.RefundNotice{MchID: k.MchID, OutTradeNo: no, TransactionID: "42000" + no,
		OutRefundNo: outRefundNo, RefundID: "50300" + outRefundNo, RefundStatus: "SUCCESS",
		SuccessTime: "2025-01-15T11:00:00+08:00", UserReceivedAccount: "支付用户零钱",
		Amount: wxpaysim.RefundNoticeAmount{Total: 100, Refund: 100, PayerTotal: 100, PayerRefund: 100}},
		wxpaysim.PublicKeyMode(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rfLedger is what the ledger holds of an order: its state, notices,
// confirmation jobs (state, held?) and anomalies (kind:ref:seen).
func rfLedger(t *testing.T, s *ledger.Store, no string) string {
	t.Helper()
	ctx := context.Background()
	state := "none"
	if p, err := s.Payment(ctx, no); err == nil {
		state = string(p.State)
	}
	notices, err := s.Notices(ctx, no)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Outbox().JobsOf(ctx, no)
	if err != nil {
		t.Fatal(err)
	}
	var js []string
	for _, j := range jobs {
		js = append(js, fmt.Sprintf("%s:%s:held=%v", j.Kind, j.State, strings.HasPrefix(j.LastError, "held:")))
	}
	as, err := s.Anomalies(ctx, no)
	if err != nil {
		t.Fatal(err)
	}
	var fs []string
	for _, a := range as {
		fs = append(fs, fmt.Sprintf("%s:%s:%d", a.Kind, a.Ref, a.SeenCount))
	}
	sort.Strings(fs)
	return fmt.Sprintf("payment %s, %d notices, jobs %v, anomalies %v", state, len(notices), js, fs)
}

func rfHeld(no string, notices int, unknownRefund string) string {
	fs := []string{fmt.Sprintf("%s:refunded:%s:1", ledger.AnomalyRefundedOutside, no)}
	if unknownRefund != "" {
		fs = append(fs, fmt.Sprintf("%s:%s:SUCCESS:1", ledger.AnomalyUnknownRefund, unknownRefund))
	}
	return fmt.Sprintf("payment SUCCESS, %d notices, jobs [%s:%s:held=true], anomalies %v", notices,
		ledger.JobConfirmInventory, ledger.JobDead, fs)
}

func rfShipped() string {
	return fmt.Sprintf("payment SUCCESS, 1 notices, jobs [%s:%s:held=false], anomalies []", ledger.JobConfirmInventory, ledger.JobPending)
}

// TestCallbackWithTradeStateRefund: WeChat Pay's transaction resource may
// say trade_state REFUND (the order was refunded before the notice reached
// us). The callback is answered 204 and the payment recorded as an order
// query saying REFUND records it: its stock confirmation held dead and
// REFUNDED_OUTSIDE flagged, for an order registered or not. A
// redelivery, to this instance (its gate) or to another (the ledger),
// changes nothing. Other states that are not paid are still refused.
func TestCallbackWithTradeStateRefund(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		e, other := newRFEdge(t, keys, s, 1), newRFEdge(t, keys, s, 1)
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "rfs-reg", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"rfs-reg", "rfs-new"} {
			n := rfPaymentNotice(t, keys, no, "REFUND")
			if code := e.post(t, "payment", n); code != http.StatusNoContent {
				t.Fatalf("%s: TRANSACTION.SUCCESS with trade_state REFUND answered %d, want 204", no, code)
			}
			want := rfHeld(no, 1, "")
			if got := rfLedger(t, s, no); got != want {
				t.Fatalf("%s:\n got %s\nwant %s", no, got, want)
			}
			for _, edge := range []*rfEdge{e, other, other} {
				if code := edge.post(t, "payment", n); code != http.StatusNoContent {
					t.Fatalf("%s: redelivery answered %d, want 204", no, code)
				}
			}
			if got := rfLedger(t, s, no); got != want {
				t.Fatalf("%s after redeliveries:\n got %s\nwant %s", no, got, want)
			}
		}
		if code := e.post(t, "payment", rfPaymentNotice(t, keys, "rfs-notpay", "NOTPAY")); code != http.StatusBadRequest {
			t.Fatalf("TRANSACTION.SUCCESS with trade_state NOTPAY answered %d, want 400", code)
		}
		if got := rfLedger(t, s, "rfs-notpay"); got != "payment none, 0 notices, jobs [], anomalies []" {
			t.Fatalf("rfs-notpay: %s", got)
		}
	})
}

// TestRefundNoticeBeforePaymentNotice: the merchant refunded an order in
// the merchant platform while its payment callback was still being
// redelivered, so its REFUND.SUCCESS notice came first (204, stored,
// UNKNOWN_REFUND). The payment callback then gets 204 and the payment is
// recorded, but its stock confirmation is held dead and REFUNDED_OUTSIDE
// flagged: goods must not ship for money that went back. Redeliveries of
// either notice, to either instance, change nothing.
func TestRefundNoticeBeforePaymentNotice(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		e, other := newRFEdge(t, keys, s, 1), newRFEdge(t, keys, s, 1)
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "rff-reg", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"rff-reg", "rff-new"} {
			refund, pay := rfRefundNotice(t, keys, no, "out-"+no), rfPaymentNotice(t, keys, no, "SUCCESS")
			if code := e.post(t, "refund", refund); code != http.StatusNoContent {
				t.Fatalf("%s: refund notice answered %d, want 204", no, code)
			}
			if code := e.post(t, "payment", pay); code != http.StatusNoContent {
				t.Fatalf("%s: payment notice answered %d, want 204", no, code)
			}
			want := rfHeld(no, 2, "out-"+no)
			if got := rfLedger(t, s, no); got != want {
				t.Fatalf("%s, refunded before its payment notice came:\n got %s\nwant %s", no, got, want)
			}
			redeliverBoth(t, s, no, pay, refund, want, e, other, other)
		}
	})
}

// TestRefundNoticeBeforePaymentNoticeGroupCommitted: the same, for
// payment notices that wait while the ledger is busy and then share one
// group commit with plain ones: each gets what it would get alone.
func TestRefundNoticeBeforePaymentNoticeGroupCommitted(t *testing.T) {
	keys := rfKeys(t)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		e := newRFEdge(t, keys, s, 16)
		refunded := []string{"rfg-r1", "rfg-r2"}
		plain := []string{"rfg-p1", "rfg-p2", "rfg-p3"}
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "rfg-plug", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for _, no := range refunded {
			if code := e.post(t, "refund", rfRefundNotice(t, keys, no, "out-"+no)); code != http.StatusNoContent {
				t.Fatalf("%s: refund notice answered %d", no, code)
			}
		}
		// Keep the only worker busy on the plug's payment (SQLite: the
		// store's one connection is taken; MySQL: the plug's row is locked)
		// while the others queue behind it.
		plug := s.DB().Begin()
		if err := plug.Exec("SELECT id FROM payments WHERE out_trade_no = ? "+forUpdate(s), "rfg-plug").Error; err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		codes := make(chan string, 10)
		deliver := func(no string) {
			if code := e.post(t, "payment", rfPaymentNotice(t, keys, no, "SUCCESS")); code != http.StatusNoContent {
				codes <- fmt.Sprintf("%s: %d", no, code)
			}
		}
		wg.Go(func() { deliver("rfg-plug") })
		// Nothing shows a notice waiting for the worker: sleep long enough
		// for a loaded race-enabled run to verify and hand over five signed
		// notices (200 and 300 ms were tight for that), as one fewer splits
		// the group commit the test is about.
		time.Sleep(500 * time.Millisecond)
		for _, no := range append(append([]string{}, refunded...), plain...) {
			wg.Go(func() { deliver(no) })
		}
		time.Sleep(time.Second) // all five wait to hand their update over
		if err := plug.Rollback().Error; err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			t.Errorf("payment notice answered %s, want 204", c)
		}
		var sizes [][2]int
		for len(sizes) < 2 {
			select {
			case b := <-e.batches:
				sizes = append(sizes, b)
			case <-time.After(5 * time.Second):
				t.Fatalf("commits %v, want the plug's and one of the five", sizes)
			}
		}
		if sizes[1][0] != 5 {
			t.Fatalf("commits (size, batched) %v: the five notices did not share one group commit", sizes)
		}
		for _, no := range refunded {
			if got, want := rfLedger(t, s, no), rfHeld(no, 2, "out-"+no); got != want {
				t.Errorf("group-committed %s, refunded before its payment notice came:\n got %s\nwant %s", no, got, want)
			}
		}
		for _, no := range plain {
			if got := rfLedger(t, s, no); got != rfShipped() {
				t.Errorf("%s: %s, want %s", no, got, rfShipped())
			}
		}
	})
}

// forUpdate locks the row read on MySQL; SQLite has no row locks (its
// one connection is held by the transaction instead).
func forUpdate(s *ledger.Store) string {
	if s.DB().Dialector.Name() == "mysql" {
		return "FOR UPDATE"
	}
	return ""
}

// redeliverBoth posts the payment and refund notices of order no again to
// each edge and checks that the ledger still reads want.
func redeliverBoth(t *testing.T, s *ledger.Store, no string, pay, refund wxpaysim.Notification, want string, edges ...*rfEdge) {
	t.Helper()
	for _, edge := range edges {
		for path, n := range map[string]wxpaysim.Notification{"payment": pay, "refund": refund} {
			if code := edge.post(t, path, n); code != http.StatusNoContent {
				t.Fatalf("%s: %s redelivery answered %d", no, path, code)
			}
		}
	}
	if got := rfLedger(t, s, no); got != want {
		t.Fatalf("%s after redeliveries:\n got %s\nwant %s", no, got, want)
	}
}
