package inventory_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"paygateway/gateway/inventory"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/retry"
)

// TestLateConfirmationIsNotSkipped: attempt 1 of a confirmation reaches
// the inventory only after the client gave up (held at the server); the
// order is refunded in full; attempt 2's query gets 404 (not applied
// yet); then the first request applies. Attempt 2 must not skip (a skip
// takes the release with it: stock confirmed, never released): it sends
// again under the same key, and the release follows.
func TestLateConfirmationIsNotSkipped(t *testing.T) {
	ctx := context.Background()
	s := ledgertest.OpenSQLite(t)
	sim := inventorysim.New()
	// The first confirmation is held at the server until the client gives
	// up, unanswered and not applied; the test applies it later.
	late := make(chan *http.Request, 1)
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first := false
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/confirmations") {
			once.Do(func() { first = true })
		}
		if !first {
			sim.Handler().ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		held := httptest.NewRequest(r.Method, r.URL.String(), bytes.NewReader(body))
		held.Header = r.Header.Clone()
		late <- held
		<-r.Context().Done()
	}))
	defer srv.Close()
	jobs := &inventory.Jobs{Client: inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: 200 * time.Millisecond}), Orders: s}
	q := s.Outbox()

	no := "rv-inflight"
	if _, err := s.ApplyTransaction(ctx, ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS",
			ResourceType: "encrypt-resource", OutTradeNo: no, TransactionID: "tx-" + no, Plaintext: "{}"},
		OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", AppID: "wxapp", MchID: "1900000001",
		PayerOpenID: "openid-1", AmountTotal: 100, PayerTotal: 100, Currency: "CNY", SuccessTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	run := func(kind string, h func(context.Context, retry.Job) error) error {
		t.Helper()
		js, err := q.Claim(ctx, "w", 10, time.Minute)
		if err != nil || len(js) != 1 || js[0].Kind != kind {
			t.Fatalf("claim %s: %+v, %v", kind, js, err)
		}
		j := js[0]
		herr := h(ctx, j)
		now := time.Now().UTC()
		a := retry.Attempt{JobID: j.ID, Number: j.Attempt, Worker: "w", StartedAt: now, FinishedAt: now}
		switch {
		case herr == nil:
			a.Outcome = retry.OutcomeDone
			err = q.Complete(ctx, a)
		case retry.IsSkipped(herr):
			a.Outcome, a.Err = retry.OutcomeSkipped, herr.Error()
			err = q.Complete(ctx, a)
		default:
			a.Outcome, a.Err, a.NextRunAt = retry.OutcomeRetry, herr.Error(), now
			err = q.Retry(ctx, a)
		}
		if err != nil {
			t.Fatal(err)
		}
		return herr
	}
	err := run(ledger.JobConfirmInventory, jobs.Confirm)
	t.Logf("confirm attempt 1: %v", err)

	if _, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: no, OutRefundNo: "R" + no, Amount: 100,
		Requester: "openid-1", CheckAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, to := range []ledger.RefundState{ledger.RefundProcessing, ledger.RefundSuccess} {
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "R" + no, State: to, Source: ledger.SourceQuery}); err != nil {
			t.Fatal(err)
		}
	}
	err = run(ledger.JobConfirmInventory, jobs.Confirm)
	t.Logf("confirm attempt 2: %v", err)

	// Attempt 1's request lands now.
	sim.Handler().ServeHTTP(httptest.NewRecorder(), <-late)

	err = run(ledger.JobReleaseInventory, jobs.Release)
	t.Logf("release attempt 1: %v", err)
	if c, r := sim.ConfirmCount(no), sim.ReleaseCount(no); c != r {
		t.Fatalf("inventory: confirmed %d, released %d for an order refunded in full: stock confirmed, never released", c, r)
	}
}
