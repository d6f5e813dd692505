package inventory_test

import (
	"context"
	"errors"
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

// TestOutsideRefundDuringAnAttemptHoldsTheRetry: WeChat Pay's word that an
// order was refunded outside the gateway arrives while its confirmation's
// first attempt is under way (the job is claimed, so the notice cannot
// hold it). That attempt fails; the next one, instead of sending, holds
// the confirmation for a person. A person's replay then sends it.
func TestOutsideRefundDuringAnAttemptHoldsTheRetry(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "out-during"
		sim := inventorysim.New()
		srv := httptest.NewServer(firstConfirmation(sim, func(w http.ResponseWriter, _ *http.Request) {
			outsideRefundNow(t, s, no) // the notice arrives during attempt 1, which then fails, not applied
			http.Error(w, `{"code":"INTERNAL"}`, http.StatusInternalServerError)
		}))
		defer srv.Close()
		pay(t, s, no)
		pool := confirmPool(s, srv.URL)
		job := runUntil(t, pool, s, no, ledger.JobDead)
		if !strings.HasPrefix(job.LastError, "held:") || sim.ConfirmCount(no) != 0 {
			t.Fatalf("after the outside refund: job %s %q, confirmed %d; want held, not sent", job.State, job.LastError, sim.ConfirmCount(no))
		}
		if _, err := s.Outbox().Replay(ctx, job.ID, "ops:test"); err != nil {
			t.Fatal(err)
		}
		runUntil(t, pool, s, no, ledger.JobDone)
		if got := sim.ConfirmCount(no); got != 1 {
			t.Fatalf("after the replay: confirmed %d, want 1", got)
		}
	})
}

// runUntil runs the pool until order no's only job is in state.
func runUntil(t *testing.T, pool *retry.Pool, s *ledger.Store, no, state string) ledger.OutboxJob {
	t.Helper()
	for range 200 {
		if _, err := pool.RunOnce(context.Background(), "t-w0"); err != nil {
			t.Fatal(err)
		}
		jobs, err := s.Outbox().JobsOf(context.Background(), no)
		if err != nil || len(jobs) != 1 {
			t.Fatalf("jobs of %s: %v, %v", no, jobs, err)
		}
		if jobs[0].State == state {
			return jobs[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("job of %s never %s", no, state)
	return ledger.OutboxJob{}
}

func pay(t *testing.T, s *ledger.Store, no string) {
	t.Helper()
	_, err := s.ApplyTransaction(context.Background(), ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS",
			ResourceType: "encrypt-resource", OutTradeNo: no, TransactionID: "tx-" + no, Plaintext: "{}"},
		OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", AppID: "wxapp", MchID: "1900000001",
		PayerOpenID: "openid-1", AmountTotal: 100, PayerTotal: 100, Currency: "CNY", SuccessTime: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
}

// outsideRefund is WeChat Pay's REFUND.SUCCESS notice of a refund of order
// no the gateway never made.
func outsideRefund(no string) ledger.RefundUpdate {
	return ledger.RefundUpdate{OutRefundNo: "out-" + no, State: ledger.RefundSuccess, RefundID: "503-" + no,
		TransactionID: "tx-" + no, Amount: 100, SuccessTime: time.Now(), Source: ledger.SourceCallback, Ref: "rn-" + no,
		Notice: &ledger.Notice{NotifyID: "rn-" + no, Source: ledger.SourceCallback, EventType: "REFUND.SUCCESS",
			ResourceType: "encrypt-resource", OutTradeNo: no, TransactionID: "tx-" + no, OutRefundNo: "out-" + no, Plaintext: "{}"}}
}

// confirmPool delivers confirmations and releases to the inventory at url.
func confirmPool(s *ledger.Store, url string) *retry.Pool { return confirmPoolFor(s, url, time.Minute) }

// firstConfirmation serves sim, except that the first confirmation it is
// sent is answered by first instead.
func firstConfirmation(sim *inventorysim.Sim, first http.HandlerFunc) http.Handler {
	return confirmations(sim, first)
}

// confirmations serves sim, except that the n-th confirmation it is sent
// is answered by answers[n-1], while there is one.
func confirmations(sim *inventorysim.Sim, answers ...http.HandlerFunc) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/confirmations") {
			mu.Lock()
			var answer http.HandlerFunc
			if len(answers) > 0 {
				answer, answers = answers[0], answers[1:]
			}
			mu.Unlock()
			if answer != nil {
				answer(w, r)
				return
			}
		}
		sim.Handler().ServeHTTP(w, r)
	})
}

// outsideRefundNow stores WeChat Pay's notice of a refund of order no made
// outside the gateway.
func outsideRefundNow(t *testing.T, s *ledger.Store, no string) {
	t.Helper()
	if _, err := s.ApplyRefund(context.Background(), outsideRefund(no)); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("outside refund notice: %v", err)
	}
}

// confirmPoolFor is confirmPool giving up on a job maxElapsed after its
// first attempt.
func confirmPoolFor(s *ledger.Store, url string, maxElapsed time.Duration) *retry.Pool {
	jobs := &inventory.Jobs{Client: inventory.New(inventory.Config{BaseURL: url, Timeout: time.Second}), Orders: s}
	return retry.NewPool(retry.PoolConfig{Name: "t", Workers: 1, Batch: 10, Lease: 10 * time.Second,
		AttemptTimeout: 2 * time.Second, Policy: retry.Policy{Initial: time.Millisecond, Max: time.Millisecond,
			MaxElapsed: maxElapsed}}, s.Outbox(), retry.Mux{ledger.JobConfirmInventory: retry.HandlerFunc(jobs.Confirm),
		ledger.JobReleaseInventory: retry.HandlerFunc(jobs.Release)})
}

// appliedAnswerLost serves sim, except that it answers the first
// confirmation 502 after applying it, and, with queriesFail, every query
// 503.
func appliedAnswerLost(sim *inventorysim.Sim, queriesFail bool) *httptest.Server {
	h := firstConfirmation(sim, func(w http.ResponseWriter, r *http.Request) {
		sim.Handler().ServeHTTP(httptest.NewRecorder(), r)
		http.Error(w, `{"code":"INTERNAL"}`, http.StatusBadGateway)
	})
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if queriesFail && r.Method == http.MethodGet {
			http.Error(w, `{"code":"UNAVAILABLE"}`, http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// refundedOutsideThenHere records 30 of order no's 100 fen refunded
// outside the gateway (WeChat Pay's notice), then the other 70 refunded by
// the gateway, up to SUCCESS.
func refundedOutsideThenHere(t *testing.T, s *ledger.Store, no string) {
	t.Helper()
	ctx := context.Background()
	u := outsideRefund(no)
	u.Amount = 30
	if _, err := s.ApplyRefund(ctx, u); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("outside refund notice: %v", err)
	}
	refundHere(t, s, no, 70)
}

// refundHere records a refund of amount of order no by the gateway
// (R<no>), through the state machine up to SUCCESS.
func refundHere(t *testing.T, s *ledger.Store, no string, amount int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: no, OutRefundNo: "R" + no, Amount: amount,
		Requester: "openid-1", CheckAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, to := range []ledger.RefundState{ledger.RefundProcessing, ledger.RefundSuccess} {
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "R" + no, State: to, Source: ledger.SourceQuery}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDuplicatesRefundDoesNotHold: a refund outside the gateway of a
// duplicate payment's transaction (as DUPLICATE_PAYMENT asks) leaves the
// paid order's confirmation alone: it is sent.
func TestDuplicatesRefundDoesNotHold(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "dup-refunded"
		sim := inventorysim.New()
		srv := httptest.NewServer(sim.Handler())
		defer srv.Close()
		pay(t, s, no)
		u := outsideRefund(no)
		u.TransactionID, u.Notice.TransactionID = "tx2-"+no, "tx2-"+no // the duplicate's transaction
		if _, err := s.ApplyRefund(ctx, u); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("duplicate's refund notice: %v", err)
		}
		jobs, _ := s.Outbox().JobsOf(ctx, no)
		t.Logf("after the duplicate's refund notice: job %s %q", jobs[0].State, jobs[0].LastError)
		pool := confirmPool(s, srv.URL)
		for range 50 {
			if _, err := pool.RunOnce(ctx, "t-w0"); err != nil {
				t.Fatal(err)
			}
			jobs, _ = s.Outbox().JobsOf(ctx, no)
			if jobs[0].State == ledger.JobDone || jobs[0].State == ledger.JobDead {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if jobs[0].State != ledger.JobDone || sim.ConfirmCount(no) != 1 {
			t.Fatalf("paid order (only its duplicate refunded): job %s %q, confirmed %d; want DONE, sent once",
				jobs[0].State, jobs[0].LastError, sim.ConfirmCount(no))
		}
	})
}

// TestDeadLetterSaysHeld: word of a refund outside the gateway came while
// the confirmation's attempt was under way, and that attempt died for
// another reason (an inventory refusal): the dead letter says it is held
// and why it died, so the person who replays it (which sends it) knows.
func TestDeadLetterSaysHeld(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "replay-other"
		sim := inventorysim.New()
		srv := httptest.NewServer(firstConfirmation(sim, func(w http.ResponseWriter, _ *http.Request) {
			outsideRefundNow(t, s, no)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"code":"BAD_REQUEST"}`))
		}))
		defer srv.Close()
		pay(t, s, no)
		pool := confirmPool(s, srv.URL)
		job := runUntil(t, pool, s, no, ledger.JobDead)
		if !strings.HasPrefix(job.LastError, "held:") || !strings.Contains(job.LastError, "BAD_REQUEST") {
			t.Fatalf("dead letter shown to a person: %q; want held, with the last error", job.LastError)
		}
		if _, err := s.Outbox().Replay(ctx, job.ID, "ops:test"); err != nil {
			t.Fatal(err)
		}
		runUntil(t, pool, s, no, ledger.JobDone) // the person decided, knowing
		if got := sim.ConfirmCount(no); got != 1 {
			t.Fatalf("after the replay: confirmed %d, want 1", got)
		}
	})
}

// TestAttemptedConfirmationIsAskedBeforeHeld: the confirmation's first
// attempt took effect at the inventory but its answer was lost; then
// WeChat Pay reports 30 of 100 fen refunded outside the gateway, and the
// gateway refunds the other 70. The notice must not hold the attempted
// confirmation as unsent: its next attempt asks, finds it applied, and the
// gateway refund's release follows.
func TestAttemptedConfirmationIsAskedBeforeHeld(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "applied-lost"
		sim := inventorysim.New()
		srv := appliedAnswerLost(sim, false)
		defer srv.Close()
		pay(t, s, no)
		pool := confirmPool(s, srv.URL)
		if _, err := pool.RunOnce(ctx, "t-w0"); err != nil {
			t.Fatal(err)
		}
		refundedOutsideThenHere(t, s, no)
		for range 200 {
			if _, err := pool.RunOnce(ctx, "t-w0"); err != nil {
				t.Fatal(err)
			}
			if sim.ReleaseCount(no) > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if c, r := sim.ConfirmCount(no), sim.ReleaseCount(no); c != 1 || r != 1 {
			jobs, _ := s.Outbox().JobsOf(ctx, no)
			t.Fatalf("inventory confirmed %d, released %d (jobs %+v); want the applied confirmation kept and the release sent", c, r, jobs)
		}
	})
}

// TestDeadConfirmationSaysHeldAfterLaterOutsideRefund: a confirmation dead
// for another reason (an inventory refusal) before WeChat Pay reports its
// order refunded outside the gateway says held from then on, keeping why
// it died, so a replay is a person's informed choice.
func TestDeadConfirmationSaysHeldAfterLaterOutsideRefund(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "dead-first"
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"code":"BAD_REQUEST"}`))
		}))
		defer srv.Close()
		pay(t, s, no)
		job := runUntil(t, confirmPool(s, srv.URL), s, no, ledger.JobDead)
		if _, err := s.ApplyRefund(ctx, outsideRefund(no)); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("outside refund notice: %v", err)
		}
		jobs, err := s.Outbox().JobsOf(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		outside, err := s.RefundedOutside(ctx, no, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if last := jobs[0].LastError; !strings.HasPrefix(last, "held:") || !strings.Contains(last, "BAD_REQUEST") || !outside {
			t.Fatalf("dead letter %q, REFUNDED_OUTSIDE %v; want held, with why it died, and flagged", last, outside)
		}
	})
}

// TestAttemptedDeadConfirmationSaysItMayBeInEffect: attempt 1 put the
// confirmation into effect but its answer was lost, an outside refund of
// 30 fen and a gateway refund of 70 followed, and the inventory's query
// then failed until max_elapsed. The dead letter must say the stock may be
// confirmed: a person whose order does not ship must still replay it, or
// the gateway refund's release held behind it never runs.
func TestAttemptedDeadConfirmationSaysItMayBeInEffect(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "rv-applied-dead"
		sim := inventorysim.New()
		srv := appliedAnswerLost(sim, true)
		defer srv.Close()
		pay(t, s, no)
		pool := confirmPoolFor(s, srv.URL, 300*time.Millisecond)
		if _, err := pool.RunOnce(ctx, "t-w0"); err != nil {
			t.Fatal(err)
		}
		refundedOutsideThenHere(t, s, no)
		var all []ledger.OutboxJob
		for range 400 {
			if _, err := pool.RunOnce(ctx, "t-w0"); err != nil {
				t.Fatal(err)
			}
			all, _ = s.Outbox().JobsOf(ctx, no)
			if all[0].State == ledger.JobDead {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		c := all[0]
		if c.State != ledger.JobDead || sim.ConfirmCount(no) != 1 || !strings.Contains(c.LastError, "may have confirmed the stock") {
			t.Fatalf("confirmation %s %q, inventory confirmed %d; want dead, saying an earlier attempt may have "+
				"confirmed the stock (so a person replays it to run the held releases)", c.State, c.LastError, sim.ConfirmCount(no))
		}
	})
}
