package wxpaysim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/jsapi"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// received is one verified notification seen by a merchant endpoint.
type received struct {
	ID, EventType, Serial string
	Plain                 map[string]any
}

// merchant is a notification endpoint that verifies with wechatpay-go and
// answers the statuses in answers (then 204).
type merchant struct {
	mu      sync.Mutex
	got     []received
	answers []int
}

func (m *merchant) serve(t *testing.T) *httptest.Server {
	h := sdkNotifyHandler(t, testKeys(t))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var plain map[string]any
		req, err := h.ParseNotifyRequest(r.Context(), r, &plain)
		if err != nil {
			http.Error(w, `{"code":"FAIL","message":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.got = append(m.got, received{req.ID, req.EventType, r.Header.Get("Wechatpay-Serial"), plain})
		status := http.StatusNoContent
		if len(m.answers) > 0 {
			status, m.answers = m.answers[0], m.answers[1:]
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func (m *merchant) received() []received {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]received(nil), m.got...)
}

func TestPayNotifiesAndResends(t *testing.T) {
	m := &merchant{answers: []int{http.StatusInternalServerError}}
	endpoint := m.serve(t)
	sim, _ := startSim(t, wxpaysim.Options{NotifyURL: endpoint.URL,
		NotifyRetryDelays: []time.Duration{10 * time.Millisecond}, SignMode: wxpaysim.CertMode(1)})
	ctx := context.Background()
	tx, err := sim.Pay(ctx, "T1", 100, "o1", false)
	if err != nil {
		t.Fatalf("Pay: %v", err)
	}
	if tx.TradeState != "SUCCESS" || !strings.HasPrefix(tx.TransactionID, "4200000") || len(tx.TransactionID) != 28 {
		t.Fatalf("transaction=%+v", tx)
	}
	waitFor(t, "redelivery after 500", func() bool { o, _ := sim.Order("T1"); return o.NotifyAcked })
	if status, err := sim.ResendPayment(ctx, "T1"); err != nil || status != http.StatusNoContent {
		t.Fatalf("ResendPayment: status=%d err=%v", status, err)
	}
	got := m.received()
	if len(got) != 3 {
		t.Fatalf("deliveries=%d, want 3 (500, retry, resend)", len(got))
	}
	for _, r := range got {
		if r.ID != got[0].ID || r.EventType != "TRANSACTION.SUCCESS" || r.Serial != testKeys(t).Certs[1].Serial {
			t.Fatalf("delivery %+v, want same id %s", r, got[0].ID)
		}
	}
	if got[0].Plain["transaction_id"] != tx.TransactionID || got[0].Plain["trade_state"] != "SUCCESS" {
		t.Fatalf("plaintext=%v", got[0].Plain)
	}
	// Paying again is idempotent and sends nothing.
	if again, err := sim.Pay(ctx, "T1", 100, "o1", false); err != nil || again.TransactionID != tx.TransactionID {
		t.Fatalf("second Pay: %+v %v", again, err)
	}
	if _, err := sim.Pay(ctx, "T1", 999, "o1", false); !errors.Is(err, wxpaysim.ErrOrderState) {
		t.Fatalf("Pay with other amount: err=%v, want ErrOrderState", err)
	}
}

func TestPayDropNotification(t *testing.T) {
	m := &merchant{}
	sim, _ := startSim(t, wxpaysim.Options{NotifyURL: m.serve(t).URL})
	if _, err := sim.Pay(context.Background(), "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	if n := len(m.received()); n != 0 {
		t.Fatalf("deliveries=%d, want 0", n)
	}
	if status, err := sim.ResendPayment(context.Background(), "T1"); err != nil || status != http.StatusNoContent {
		t.Fatalf("ResendPayment: %d %v", status, err)
	}
	if n := len(m.received()); n != 1 {
		t.Fatalf("deliveries=%d, want 1", n)
	}
}

func createRefund(ctx context.Context, c *core.Client, outTradeNo, outRefundNo string, amount, total int64) (*refunddomestic.Refund, error) {
	r, _, err := (&refunddomestic.RefundsApiService{Client: c}).Create(ctx, refunddomestic.CreateRequest{
		OutTradeNo: core.String(outTradeNo), OutRefundNo: core.String(outRefundNo),
		Amount: &refunddomestic.AmountReq{Refund: core.Int64(amount), Total: core.Int64(total), Currency: core.String("CNY")},
	})
	return r, err
}

func TestRefundSettlesAndNotifies(t *testing.T) {
	m := &merchant{}
	sim, _, c := refundSim(t, m)
	ctx := context.Background()
	r, err := createRefund(ctx, c, "T1", "R1", 30, 100)
	if err != nil {
		t.Fatalf("create refund: %v", err)
	}
	if *r.Status != refunddomestic.STATUS_PROCESSING || *r.Amount.Refund != 30 {
		t.Fatalf("refund=%+v", r)
	}
	if n := sim.SettleRefunds(); n != 1 {
		t.Fatalf("settled=%d, want 1", n)
	}
	waitFor(t, "refund notification", func() bool { return len(m.received()) == 1 })
	got := m.received()[0]
	if got.EventType != "REFUND.SUCCESS" || got.Plain["refund_status"] != "SUCCESS" || got.Plain["out_refund_no"] != "R1" {
		t.Fatalf("notification=%+v", got)
	}
	q, _, err := (&refunddomestic.RefundsApiService{Client: c}).QueryByOutRefundNo(ctx,
		refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String("R1")})
	if err != nil || *q.Status != refunddomestic.STATUS_SUCCESS || q.SuccessTime == nil {
		t.Fatalf("query refund: %+v %v", q, err)
	}
	tx, _, err := (&jsapi.JsapiApiService{Client: c}).QueryOrderByOutTradeNo(ctx,
		jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: core.String("T1"), Mchid: core.String(testMchID)})
	if err != nil || *tx.TradeState != "REFUND" {
		t.Fatalf("query order: %+v %v", tx, err)
	}
}

func TestRefundOutcomeClosedReleasesAmount(t *testing.T) {
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	sim.SetFaults(wxpaysim.Faults{RefundOutcome: "CLOSED"})
	if _, err := createRefund(ctx, c, "T1", "R1", 100, 100); err != nil {
		t.Fatal(err)
	}
	sim.SettleRefunds()
	if _, err := createRefund(ctx, c, "T1", "R2", 100, 100); err != nil {
		t.Fatalf("refund after CLOSED: %v", err)
	}
	refunds := sim.Refunds()
	if len(refunds) != 2 || refunds[0].Status != "CLOSED" || refunds[1].Status != "PROCESSING" {
		t.Fatalf("refunds=%+v", refunds)
	}
}

func TestRefundRules(t *testing.T) {
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "PAID", 100, "", true); err != nil {
		t.Fatal(err)
	}
	if err := sim.RegisterOrder("UNPAID", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := createRefund(ctx, c, "PAID", "R1", 60, 100); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, outTradeNo, outRefundNo string
		amount, total                 int64
		wantStatus                    int
		wantCode                      string
	}{
		{"repeat is idempotent", "PAID", "R1", 60, 100, 200, ""},
		{"repeat with other amount", "PAID", "R1", 50, 100, 400, "INVALID_REQUEST"},
		{"over refund", "PAID", "R2", 41, 100, 400, "INVALID_REQUEST"},
		{"wrong total", "PAID", "R3", 10, 99, 400, "INVALID_REQUEST"},
		{"unpaid order", "UNPAID", "R4", 10, 100, 404, "RESOURCE_NOT_EXISTS"},
		{"unknown order", "NOPE", "R5", 10, 100, 404, "RESOURCE_NOT_EXISTS"},
		{"rest of the order", "PAID", "R6", 40, 100, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := createRefund(ctx, c, tc.outTradeNo, tc.outRefundNo, tc.amount, tc.total)
			var apiErr *core.APIError
			switch {
			case tc.wantCode == "" && err != nil:
				t.Fatalf("err=%v, want success", err)
			case tc.wantCode != "" && (!errors.As(err, &apiErr) || apiErr.StatusCode != tc.wantStatus || apiErr.Code != tc.wantCode):
				t.Fatalf("err=%v, want %d %s", err, tc.wantStatus, tc.wantCode)
			}
		})
	}
	if got := sim.RefundCount("R1"); got != 1 {
		t.Fatalf("RefundCount(R1)=%d, want 1", got)
	}
	if r := sim.Refunds()[0]; r.Requests != 3 {
		t.Fatalf("R1 requests=%d, want 3", r.Requests)
	}
	want := map[string]int{"changed_params": 1, "over_refund": 1, "wrong_total": 1, "not_paid": 2}
	if got := sim.RefundsRefused(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("RefundsRefused()=%v, want %v", got, want)
	}
}

func TestConcurrentRefundsNeverOverRefund(t *testing.T) {
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
	c := sdkClient(t, testKeys(t), srv.URL, 10*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			no := []string{"RA", "RB", "RC"}[i%3] // three logical refunds, retried concurrently
			_, _ = createRefund(ctx, c, "T1", no, 40, 100)
		})
	}
	wg.Wait()
	var total int64
	for _, r := range sim.Refunds() {
		if r.Executed != 1 {
			t.Fatalf("%s executed %d times", r.OutRefundNo, r.Executed)
		}
		total += r.Amount
	}
	if total != 80 {
		t.Fatalf("refunded=%d, want 80 (two of three fit)", total)
	}
}

func TestMerchantSignatureRequired(t *testing.T) {
	_, srv := startSim(t, wxpaysim.Options{})
	resp, err := http.Get(srv.URL + "/v3/pay/transactions/out-trade-no/T1?mchid=" + testMchID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusUnauthorized || body.Code != "SIGN_ERROR" {
		t.Fatalf("status=%d code=%s, want 401 SIGN_ERROR", resp.StatusCode, body.Code)
	}
	// WeChat Pay signs only answers to requests whose signature it verified.
	if resp.Header.Get("Wechatpay-Signature") != "" || resp.Header.Get("Request-Id") == "" {
		t.Fatalf("SIGN_ERROR answer signed, or without Request-Id: %v", resp.Header)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name       string
		faults     wxpaysim.Faults
		wantErr    func(error) bool
		wantCount  int
		clientWait time.Duration
	}{
		{"5xx", wxpaysim.Faults{Fail5xxNext: 1}, isAPIStatus(500), 0, 5 * time.Second},
		{"5xx rate", wxpaysim.Faults{Fail5xxRate: 1, Seed: 7}, isAPIStatus(500), 0, 5 * time.Second},
		{"drop", wxpaysim.Faults{DropNext: 1}, isTransport, 0, 5 * time.Second},
		{"apply then timeout", wxpaysim.Faults{ApplyThenTimeoutNext: 1}, isTransport, 1, time.Second},
		{"delay past timeout", wxpaysim.Faults{Delay: 3 * time.Second}, isTransport, 0, time.Second},
		{"other path", wxpaysim.Faults{PathPrefix: "/v3/bill/", Fail5xxNext: 1}, isNil, 1, 5 * time.Second},
		{"order unknown", wxpaysim.Faults{OrderUnknownNext: 1}, isAPICode(404, "RESOURCE_NOT_EXISTS"), 0, 5 * time.Second},
		{"order unknown rate", wxpaysim.Faults{OrderUnknownRate: 1, Seed: 7}, isAPICode(404, "RESOURCE_NOT_EXISTS"), 0, 5 * time.Second},
		// Applied, then a proxy's 403: no code, no WeChat Pay signature.
		{"apply then forbidden", wxpaysim.Faults{ApplyThenForbiddenNext: 1}, isUnsigned(403), 1, 5 * time.Second},
		{"apply then forbidden rate", wxpaysim.Faults{ApplyThenForbiddenRate: 1, Seed: 7}, isUnsigned(403), 1, 5 * time.Second},
		// Over the merchant's quota: a signed 429, nothing applied.
		{"frequency limited", wxpaysim.Faults{FrequencyLimitedNext: 1}, isSigned(429, "FREQUENCY_LIMITED"), 0, 5 * time.Second},
		{"frequency limited rate", wxpaysim.Faults{FrequencyLimitedRate: 1, Seed: 7}, isSigned(429, "FREQUENCY_LIMITED"), 0,
			5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
			c := sdkClient(t, testKeys(t), srv.URL, tc.clientWait)
			ctx := context.Background()
			if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
				t.Fatal(err)
			}
			sim.SetFaults(tc.faults)
			_, err := createRefund(ctx, c, "T1", "R1", 10, 100)
			if !tc.wantErr(err) {
				t.Fatalf("err=%v", err)
			}
			if got := sim.RefundCount("R1"); got != tc.wantCount {
				t.Fatalf("RefundCount=%d, want %d", got, tc.wantCount)
			}
		})
	}
}

func isAPIStatus(status int) func(error) bool { return isAPICode(status, "SYSTEM_ERROR") }

func isAPICode(status int, code string) func(error) bool {
	return func(err error) bool {
		var e *core.APIError
		return errors.As(err, &e) && e.StatusCode == status && e.Code == code
	}
}

func isSigned(status int, code string) func(error) bool {
	return func(err error) bool {
		var e *core.APIError
		return isAPICode(status, code)(err) && errors.As(err, &e) && e.Header.Get("Wechatpay-Signature") != ""
	}
}

// TestPostsPerSecond: applications over the quota of a second are
// answered 429 FREQUENCY_LIMITED and not applied; queries do not count,
// and the next second has its quota again.
func TestPostsPerSecond(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().Truncate(time.Second).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1, Now: now})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	sim.SetFaults(wxpaysim.Faults{PostsPerSecond: 2})
	var limited []string
	for i := range 5 {
		no := fmt.Sprintf("R%d", i)
		_, err := createRefund(ctx, c, "T1", no, 1, 100)
		if isSigned(429, "FREQUENCY_LIMITED")(err) {
			limited = append(limited, no)
		} else if err != nil {
			t.Fatalf("%s: %v", no, err)
		}
		if _, _, err := (&refunddomestic.RefundsApiService{Client: c}).QueryByOutRefundNo(ctx,
			refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String("R0")}); err != nil {
			t.Fatalf("query: %v", err)
		}
		clock.Add(int64(100 * time.Millisecond))
	}
	if want := []string{"R2", "R3", "R4"}; !slices.Equal(limited, want) {
		t.Fatalf("limited %v, want %v", limited, want)
	}
	if sim.RefundCount("R2") != 0 || sim.RefundCount("R1") != 1 || sim.FaultsInjected()["frequency_limited"] != 3 {
		t.Fatalf("R1 %d, R2 %d applied; injected %v", sim.RefundCount("R1"), sim.RefundCount("R2"), sim.FaultsInjected())
	}
	clock.Add(int64(500 * time.Millisecond)) // the next second
	if _, err := createRefund(ctx, c, "T1", "R2", 1, 100); err != nil || sim.RefundCount("R2") != 1 {
		t.Fatalf("next second: %v, R2 applied %d times", err, sim.RefundCount("R2"))
	}
}

func isUnsigned(status int) func(error) bool {
	return func(err error) bool {
		var e *core.APIError
		return errors.As(err, &e) && e.StatusCode == status && e.Code == "" && e.Header.Get("Wechatpay-Signature") == ""
	}
}

func isTransport(err error) bool {
	var e *core.APIError
	return err != nil && !errors.As(err, &e)
}

func isNil(err error) bool { return err == nil }

// TestResendPaymentResigns checks that a resend is what WeChat redelivers:
// the same notification id with a fresh nonce and a valid signature, so a
// gateway's replay guard does not refuse it.
func TestResendPaymentResigns(t *testing.T) {
	h := sdkNotifyHandler(t, testKeys(t))
	var mu sync.Mutex
	ids, nonces := map[string]int{}, map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var plain map[string]any
		nonce := r.Header.Get("Wechatpay-Nonce")
		req, err := h.ParseNotifyRequest(r.Context(), r, &plain)
		if err != nil {
			http.Error(w, `{"code":"FAIL","message":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		mu.Lock()
		ids[req.ID]++
		nonces[nonce]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	sim, _ := startSim(t, wxpaysim.Options{NotifyURL: srv.URL, NotifyRetryDelays: []time.Duration{}})
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T2", 100, "o2", false); err != nil {
		t.Fatalf("Pay: %v", err)
	}
	for i := range 2 {
		if status, err := sim.ResendPayment(ctx, "T2"); err != nil || status != http.StatusNoContent {
			t.Fatalf("resend %d: status=%d err=%v", i, status, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 1 || len(nonces) != 3 {
		t.Fatalf("ids=%v nonces=%v, want one id delivered 3 times with 3 distinct nonces", ids, nonces)
	}
}

// TestRefundOutcomeFaults: counters close or hold the next refunds that
// settle, rates each refund, and FaultsInjected counts them.
func TestRefundOutcomeFaults(t *testing.T) {
	tests := []struct {
		name   string
		faults wxpaysim.Faults
		want   []string
	}{
		{"next", wxpaysim.Faults{RefundClosedNext: 1, RefundAbnormalNext: 1}, []string{"CLOSED", "ABNORMAL", "SUCCESS"}},
		{"closed rate", wxpaysim.Faults{RefundClosedRate: 1, Seed: 7}, []string{"CLOSED", "CLOSED", "CLOSED"}},
		{"abnormal rate", wxpaysim.Faults{RefundAbnormalRate: 1, Seed: 7}, []string{"ABNORMAL", "ABNORMAL", "ABNORMAL"}},
		{"before the outcome", wxpaysim.Faults{RefundAbnormalNext: 1, RefundOutcome: "CLOSED"}, []string{"ABNORMAL", "CLOSED", "CLOSED"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
			c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
			ctx := context.Background()
			if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
				t.Fatal(err)
			}
			sim.SetFaults(tc.faults)
			want := map[string]int{}
			for i, status := range tc.want {
				if _, err := createRefund(ctx, c, "T1", fmt.Sprintf("R%d", i), 10, 100); err != nil {
					t.Fatal(err)
				}
				if n := sim.SettleRefunds(); n != 1 {
					t.Fatalf("settled %d, want 1", n)
				}
				if got := sim.Refunds()[i].Status; got != status {
					t.Fatalf("refund %d: %s, want %s", i, got, status)
				}
				if status != "SUCCESS" {
					want[strings.ToLower(status)]++
				}
			}
			if got := sim.FaultsInjected(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("FaultsInjected()=%v, want %v", got, want)
			}
		})
	}
}

// TestAbnormalResolvesAfter: an ABNORMAL refund is not final; after
// AbnormalResolveAfter it is paid, notified REFUND.SUCCESS and queried
// SUCCESS.
func TestAbnormalResolvesAfter(t *testing.T) {
	m := &merchant{}
	sim, _, c := refundSim(t, m)
	ctx := context.Background()
	sim.SetFaults(wxpaysim.Faults{RefundAbnormalNext: 1, AbnormalResolveAfter: 200 * time.Millisecond})
	if _, err := createRefund(ctx, c, "T1", "R1", 30, 100); err != nil {
		t.Fatal(err)
	}
	sim.SettleRefunds()
	if s := queryRefund(t, c, "R1"); *s.Status != refunddomestic.STATUS_ABNORMAL || s.SuccessTime != nil {
		t.Fatalf("refund right after settling: %s, success time %v", *s.Status, s.SuccessTime)
	}
	waitFor(t, "two refund notifications", func() bool { return len(m.received()) == 2 })
	for i, want := range []string{"ABNORMAL", "SUCCESS"} {
		if got := m.received()[i]; got.EventType != "REFUND."+want || got.Plain["refund_status"] != want {
			t.Fatalf("notification %d: %+v, want REFUND.%s", i, got, want)
		}
	}
	if s := queryRefund(t, c, "R1"); *s.Status != refunddomestic.STATUS_SUCCESS || s.SuccessTime == nil {
		t.Fatalf("refund after resolving: %s, success time %v", *s.Status, s.SuccessTime)
	}
	if o, _ := sim.Order("T1"); o.Refunded != 30 {
		t.Fatalf("order refunded %d, want 30", o.Refunded)
	}
}

// TestResolveAbnormal: a person resolves ABNORMAL refunds by hand (and
// through the control API); CLOSED gives the money back to the order.
func TestResolveAbnormal(t *testing.T) {
	m := &merchant{}
	sim, srv, c := refundSim(t, m)
	ctx := context.Background()
	sim.SetFaults(wxpaysim.Faults{RefundOutcome: "ABNORMAL"})
	for _, no := range []string{"R1", "R2"} {
		if _, err := createRefund(ctx, c, "T1", no, 50, 100); err != nil {
			t.Fatal(err)
		}
	}
	sim.SettleRefunds()
	sim.SetFaults(wxpaysim.Faults{})
	if _, err := createRefund(ctx, c, "T1", "R3", 50, 100); err == nil {
		t.Fatal("a refund beyond two ABNORMAL ones was accepted")
	}
	if err := sim.ResolveAbnormal("R1", "CLOSED"); err != nil {
		t.Fatal(err)
	}
	if st := postJSON(t, srv.URL+"/sim/refunds/resolve", wxpaysim.ResolveRequest{OutRefundNo: "R2", Status: "SUCCESS"}, nil); st != 200 {
		t.Fatalf("resolve status=%d", st)
	}
	if s := queryRefund(t, c, "R1"); *s.Status != refunddomestic.STATUS_CLOSED {
		t.Fatalf("R1 %s, want CLOSED", *s.Status)
	}
	if s := queryRefund(t, c, "R2"); *s.Status != refunddomestic.STATUS_SUCCESS || s.SuccessTime == nil {
		t.Fatalf("R2 %s, success time %v", *s.Status, s.SuccessTime)
	}
	if _, err := createRefund(ctx, c, "T1", "R3", 50, 100); err != nil {
		t.Fatalf("refund in the room R1 gave back: %v", err)
	}
	waitFor(t, "four refund notifications", func() bool { return len(m.received()) == 4 })
	events := map[string]int{}
	for _, r := range m.received() {
		events[r.EventType]++
	}
	if want := map[string]int{"REFUND.ABNORMAL": 2, "REFUND.CLOSED": 1, "REFUND.SUCCESS": 1}; fmt.Sprint(events) != fmt.Sprint(want) {
		t.Fatalf("notifications %v, want %v", events, want)
	}
	for _, tc := range []struct{ no, status string }{{"R2", "CLOSED"}, {"R3", "SUCCESS"}, {"NOPE", "SUCCESS"}, {"R1", "PROCESSING"}} {
		if err := sim.ResolveAbnormal(tc.no, tc.status); !errors.Is(err, wxpaysim.ErrRefundState) {
			t.Errorf("ResolveAbnormal(%s, %s): %v, want ErrRefundState", tc.no, tc.status, err)
		}
	}
	if st := postJSON(t, srv.URL+"/sim/refunds/resolve", wxpaysim.ResolveRequest{OutRefundNo: "R2", Status: "SUCCESS"}, nil); st != http.StatusConflict {
		t.Fatalf("resolve again status=%d, want 409", st)
	}
}

func queryRefund(t *testing.T, c *core.Client, outRefundNo string) *refunddomestic.Refund {
	t.Helper()
	r, _, err := (&refunddomestic.RefundsApiService{Client: c}).QueryByOutRefundNo(context.Background(),
		refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String(outRefundNo)})
	if err != nil {
		t.Fatalf("query refund %s: %v", outRefundNo, err)
	}
	return r
}

// TestRefundQueryLag: queries do not show a refund younger than
// RefundQueryLag (whatever PathPrefix says); they answer it as they answer
// a refund that does not exist, signed, while a create sent again with its
// out_refund_no still answers the refund, executed once. Once the refund is
// old enough queries show it, and FaultsInjected counts the lagged answers.
func TestRefundQueryLag(t *testing.T) {
	clock, advance := testClock()
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1, Now: clock})
	c := sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
	ctx := context.Background()
	if _, err := sim.Pay(ctx, "T1", 100, "", true); err != nil {
		t.Fatal(err)
	}
	sim.SetFaults(wxpaysim.Faults{PathPrefix: "/v3/bill/", RefundQueryLag: time.Minute})
	if _, err := createRefund(ctx, c, "T1", "R1", 30, 100); err != nil {
		t.Fatal(err)
	}
	lagged, unknown := queryNotFound(t, c, "R1"), queryNotFound(t, c, "NOPE")
	if lagged.Body != unknown.Body || lagged.Header.Get("Wechatpay-Signature") == "" {
		t.Fatalf("lagged answer %q (signature %q), want %q signed", lagged.Body,
			lagged.Header.Get("Wechatpay-Signature"), unknown.Body)
	}
	again, err := createRefund(ctx, c, "T1", "R1", 30, 100)
	if err != nil || *again.OutRefundNo != "R1" || sim.RefundCount("R1") != 1 {
		t.Fatalf("create sent again: %+v, %v, executed %d; want R1, executed once", again, err, sim.RefundCount("R1"))
	}
	advance(time.Minute - time.Second)
	queryNotFound(t, c, "R1")
	advance(time.Second)
	if r := queryRefund(t, c, "R1"); *r.Status != refunddomestic.STATUS_PROCESSING {
		t.Fatalf("refund a minute old: %s, want PROCESSING", *r.Status)
	}
	if got, want := sim.FaultsInjected(), map[string]int{"query_lag": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("FaultsInjected()=%v, want %v", got, want)
	}
}

// queryNotFound queries a refund that WeChat Pay must answer 404
// RESOURCE_NOT_EXISTS, and returns that answer.
func queryNotFound(t *testing.T, c *core.Client, outRefundNo string) *core.APIError {
	t.Helper()
	_, _, err := (&refunddomestic.RefundsApiService{Client: c}).QueryByOutRefundNo(context.Background(),
		refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String(outRefundNo)})
	var e *core.APIError
	if !errors.As(err, &e) || e.StatusCode != http.StatusNotFound || e.Code != "RESOURCE_NOT_EXISTS" {
		t.Fatalf("query refund %s: %v, want 404 RESOURCE_NOT_EXISTS", outRefundNo, err)
	}
	return e
}
