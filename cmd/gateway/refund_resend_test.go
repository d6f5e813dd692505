package main

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"paygateway/gateway"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// scriptedRefunds is a RefundAPI whose answers a test writes in advance:
// each call takes the next answer for its kind, or fails the test.
type scriptedRefunds struct {
	t       *testing.T
	mu      sync.Mutex
	creates []func(gateway.WxRefundRequest) (*gateway.WxRefund, error)
	queries []func(string) (*gateway.WxRefund, error)
}

func (a *scriptedRefunds) CreateRefund(_ context.Context, req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.creates) == 0 {
		a.t.Errorf("unexpected create of %s", req.OutRefundNo)
		return nil, gateway.ErrOutcomeUnknown
	}
	next := a.creates[0]
	a.creates = a.creates[1:]
	return next(req)
}

func (a *scriptedRefunds) QueryRefund(_ context.Context, outRefundNo string) (*gateway.WxRefund, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queries) == 0 {
		a.t.Errorf("unexpected query of %s", outRefundNo)
		return nil, gateway.ErrOutcomeUnknown
	}
	next := a.queries[0]
	a.queries = a.queries[1:]
	return next(outRefundNo)
}

// queriesLeft is how many scripted query answers are still unused.
func (a *scriptedRefunds) queriesLeft() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.queries)
}

func timedOut(gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	return nil, fmt.Errorf("%w: i/o timeout", gateway.ErrOutcomeUnknown)
}

func refusedCreate(gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	return nil, &gateway.RefusedError{Status: 400, Code: "INVALID_REQUEST", Message: "duplicate", Verified: true}
}

// proxyRefusal is a 403 that WeChat Pay did not sign: a proxy's or a
// WAF's, maybe after WeChat Pay took the refund.
func proxyRefusal(gateway.WxRefundRequest) (*gateway.WxRefund, error) {
	return nil, &gateway.RefusedError{Status: 403, Code: "", Message: "blocked"}
}

// TestUnsignedRefusalIsNoVerdict: a refusal WeChat Pay did not sign is as
// unknown as a timeout: the request answers 202 and keeps the amount
// reserved (a query right after the call proves nothing, WeChat's queries
// lag). A safety buffer later the janitor asks: a refund WeChat Pay shows
// is recorded; one it still does not know was refused indeed and fails,
// without being sent again into the same refusal, its history saying the
// query settled it and a warning saying it was refused (the on-call's
// sign of refunds refused, as for a signed refusal).
func TestUnsignedRefusalIsNoVerdict(t *testing.T) {
	type call = func(gateway.WxRefundRequest) (*gateway.WxRefund, error)
	type query = func(string) (*gateway.WxRefund, error)
	cases := []struct {
		name     string
		creates  []call
		queries  []query // the request's, then one per sweep
		want     ledger.RefundState
		refunded int64
	}{
		{"the proxy hid WeChat's acceptance", []call{proxyRefusal}, []query{notFound, processing}, ledger.RefundProcessing, 30},
		{"nothing at WeChat Pay", []call{proxyRefusal}, []query{notFound, notFound}, ledger.RefundFailed, 0},
		// A timeout first; the janitor's re-send meets the refusal.
		{"refused re-send", []call{timedOut, proxyRefusal}, []query{notFound, notFound, notFound}, ledger.RefundFailed, 0},
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				logs := captureLogs(t)
				no := fmt.Sprintf("unsigned-%d-%d", i, time.Now().UnixNano())
				payForResend(t, s, no)
				api := &scriptedRefunds{t: t, creates: tc.creates, queries: tc.queries}
				svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
				ctx := context.Background()
				if a, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil || a.Status != 202 {
					t.Fatalf("request: %+v %v, want 202", a, err)
				}
				checkRefund(t, s, no, ledger.RefundUnknown, 1, 30)
				for sweeps := len(tc.queries) - 1; sweeps > 0; sweeps-- {
					if err := makeDue(s, no); err != nil {
						t.Fatal(err)
					}
					if n := svc.Sweep(ctx, 10); n != 1 {
						t.Fatalf("janitor checked %d refunds, want 1", n)
					}
				}
				checkRefund(t, s, no, tc.want, len(tc.creates), tc.refunded)
				if len(api.creates)+len(api.queries) != 0 {
					t.Fatalf("calls left unmade: %d creates, %d queries", len(api.creates), len(api.queries))
				}
				if tc.want == ledger.RefundFailed {
					checkRefusalSettledByQuery(t, s, logs, no)
				}
			})
		}
	})
}

// checkRefusalSettledByQuery: the refund of order no went FAILED on a
// query's word (history source "query"), and one warning says it was
// refused, with the refusal.
func checkRefusalSettledByQuery(t *testing.T, s *ledger.Store, logs *logBuffer, no string) {
	t.Helper()
	h, err := s.History(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	if last := h[len(h)-1]; last.To != string(ledger.RefundFailed) || last.Source != ledger.SourceQuery {
		t.Errorf("last transition %+v, want →FAILED by %s", last, ledger.SourceQuery)
	}
	var warned int
	for _, l := range logLines(t, logs.String(), "refund refused by WeChat Pay") {
		if l["out_trade_no"] == no && l["level"] == "WARN" && strings.Contains(fmt.Sprint(l["refusal"]), "blocked") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d warnings of the refusal of %s, want 1; logs:\n%s", warned, no, logs.String())
	}
}

func notFound(string) (*gateway.WxRefund, error) { return nil, gateway.ErrRemoteNotFound }

func processing(no string) (*gateway.WxRefund, error) {
	return &gateway.WxRefund{OutRefundNo: no, RefundID: "wx-" + no, Status: "PROCESSING", Amount: 30}, nil
}

// TestRefusedResendIsCheckedBeforeFailing: the first attempt times out
// and WeChat Pay does not show it: the request leaves it UNKNOWN (a query
// right after the call proves nothing), and the janitor, still not
// finding it after the safety buffer, sends it again; that re-send is
// refused. The refund fails (and gives its amount back) only
// if a query still finds nothing; if the first attempt shows up, it is
// recorded instead.
func TestRefusedResendIsCheckedBeforeFailing(t *testing.T) {
	cases := []struct {
		name     string
		after    func(string) (*gateway.WxRefund, error)
		want     ledger.RefundState
		refunded int64
	}{
		{"first attempt landed", processing, ledger.RefundProcessing, 30},
		{"nothing at WeChat Pay", notFound, ledger.RefundFailed, 0},
		{"query inconclusive", func(string) (*gateway.WxRefund, error) { return nil, gateway.ErrOutcomeUnknown },
			ledger.RefundUnknown, 30},
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				no := fmt.Sprintf("resend-%d-%d", i, time.Now().UnixNano())
				payForResend(t, s, no)
				api := &scriptedRefunds{t: t,
					creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){timedOut, refusedCreate},
					queries: []func(string) (*gateway.WxRefund, error){notFound, notFound, tc.after}}
				svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
				ctx := context.Background()
				if a, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil || a.Status != 202 {
					t.Fatalf("request: %+v %v, want 202", a, err)
				}
				checkRefund(t, s, no, ledger.RefundUnknown, 1, 30)
				// Not before the safety buffer (2 min by default) is over.
				if rs, err := s.Refunds(ctx, no); err != nil || len(rs) != 1 || rs[0].NextCheckAt == nil || time.Until(*rs[0].NextCheckAt) < time.Minute {
					t.Fatalf("refunds %+v (%v): want the next check a safety buffer away", rs, err)
				}
				if n := svc.Sweep(ctx, 10); n != 0 {
					t.Fatalf("janitor checked %d refunds within the safety buffer, want none", n)
				}
				if err := makeDue(s, no); err != nil {
					t.Fatal(err)
				}
				if n := svc.Sweep(ctx, 10); n != 1 {
					t.Fatalf("janitor checked %d refunds, want 1", n)
				}
				checkRefund(t, s, no, tc.want, 2, tc.refunded)
				if len(api.creates)+len(api.queries) != 0 {
					t.Fatalf("calls left unmade: %d creates, %d queries", len(api.creates), len(api.queries))
				}
			})
		}
	})
}

// TestRefusedFirstAttemptIsCheckedBeforeFailing: even a refusal signed by
// WeChat Pay frees the amount only if a query finds no refund; a refund
// the query finds is recorded as it is, and an answer about another
// refund changes nothing.
func TestRefusedFirstAttemptIsCheckedBeforeFailing(t *testing.T) {
	other := func(string) (*gateway.WxRefund, error) { return processing("RF-someone-else") }
	cases := []struct {
		name     string
		after    func(string) (*gateway.WxRefund, error)
		want     ledger.RefundState
		refunded int64
	}{
		{"refund landed", processing, ledger.RefundProcessing, 30},
		{"nothing at WeChat Pay", notFound, ledger.RefundFailed, 0},
		{"query inconclusive", func(string) (*gateway.WxRefund, error) { return nil, gateway.ErrOutcomeUnknown },
			ledger.RefundUnknown, 30},
		{"answer about another refund", other, ledger.RefundCreated, 30},
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				no := fmt.Sprintf("refused-%d-%d", i, time.Now().UnixNano())
				payForResend(t, s, no)
				api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){refusedCreate},
					queries: []func(string) (*gateway.WxRefund, error){tc.after}}
				svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
				if _, err := svc.Create(context.Background(), "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil {
					t.Fatal(err)
				}
				checkRefund(t, s, no, tc.want, 1, tc.refunded)
				if len(api.creates)+len(api.queries) != 0 {
					t.Fatalf("calls left unmade: %d creates, %d queries", len(api.creates), len(api.queries))
				}
			})
		}
	})
}

// payForResend records order no as paid 100 fen by o-resend.
func payForResend(t *testing.T, s *ledger.Store, no string) {
	t.Helper()
	u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
		EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource", OutTradeNo: no, Plaintext: "{}"},
		OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", PayerOpenID: "o-resend",
		AmountTotal: 100, PayerTotal: 100, Currency: "CNY"}
	if _, err := s.ApplyTransaction(context.Background(), u); err != nil {
		t.Fatal(err)
	}
}

// checkRefund checks the order's only refund and its refunded total.
func checkRefund(t *testing.T, s *ledger.Store, no string, want ledger.RefundState, attempts int, refunded int64) {
	t.Helper()
	refunds, err := s.Refunds(context.Background(), no)
	if err != nil || len(refunds) != 1 {
		t.Fatalf("refunds of %s: %+v, %v", no, refunds, err)
	}
	p, err := s.Payment(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	if r := refunds[0]; r.State != want || r.Attempts != attempts || p.RefundedTotal != refunded {
		t.Fatalf("refund %s after %d attempts, refunded %d; want %s after %d and %d",
			r.State, r.Attempts, p.RefundedTotal, want, attempts, refunded)
	}
}

// TestJanitorPollsAbnormalRefunds: an ABNORMAL refund is queried again
// every recheck, never re-sent, and recorded once WeChat Pay settles it,
// since the notification of that may never arrive.
func TestJanitorPollsAbnormalRefunds(t *testing.T) {
	abnormal := func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
		return &gateway.WxRefund{OutRefundNo: req.OutRefundNo, Status: "ABNORMAL", Amount: 30}, nil
	}
	settled := func(no string) (*gateway.WxRefund, error) {
		return &gateway.WxRefund{OutRefundNo: no, RefundID: "wx-" + no, Status: "SUCCESS", Amount: 30, SuccessTime: time.Now()}, nil
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		no := fmt.Sprintf("abnormal-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){abnormal},
			queries: []func(string) (*gateway.WxRefund, error){notFound, settled}}
		svc := gateway.NewRefundService(gateway.RefundConfig{Recheck: time.Millisecond}, s, api, gateway.NewMemoryLocker())
		ctx := context.Background()
		if _, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil {
			t.Fatal(err)
		}
		checkRefund(t, s, no, ledger.RefundAbnormal, 1, 30)
		for _, want := range []ledger.RefundState{ledger.RefundAbnormal, ledger.RefundSuccess} {
			time.Sleep(5 * time.Millisecond)
			if n := svc.Sweep(ctx, 10); n != 1 {
				t.Fatalf("sweep looked at %d refunds, want 1", n)
			}
			checkRefund(t, s, no, want, 1, 30)
		}
		if len(api.queries) != 0 {
			t.Fatalf("%d queries left unmade", len(api.queries))
		}
	})
}

// TestTakeOverNeverSendsAlongsideTheJanitor: a request crashed before
// storing its answer, and the janitor has claimed its refund and is
// sending it (its call not yet visible to a query). A retry that takes the
// key over queries, finds nothing, and leaves the refund to the janitor:
// it never sends a second application alongside (had that one been
// refused, the refund would have been freed while the janitor's paid).
func TestTakeOverNeverSendsAlongsideTheJanitor(t *testing.T) {
	inconclusive := func(string) (*gateway.WxRefund, error) { return nil, gateway.ErrOutcomeUnknown }
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("takeover-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){timedOut},
			queries: []func(string) (*gateway.WxRefund, error){inconclusive}}
		svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
		params := gateway.RefundParams{OutTradeNo: no, Amount: 30}
		if _, err := svc.Create(ctx, "o-resend", "k-"+no, params); err != nil {
			t.Fatal(err)
		}
		// The answer was never stored (the request "crashed"), and the
		// janitor has counted its attempt and is sending.
		if err := s.DB().Exec("UPDATE idempotency_keys SET state = 'IN_FLIGHT', status_code = 0, response_body = NULL, locked_until = ? WHERE idem_key = ?",
			time.Now().Add(-time.Minute).UTC(), "k-"+no).Error; err != nil {
			t.Fatal(err)
		}
		refunds, err := s.Refunds(ctx, no)
		if err != nil || len(refunds) != 1 {
			t.Fatalf("refunds: %+v, %v", refunds, err)
		}
		if _, err := s.CountRefundAttempt(ctx, refunds[0].OutRefundNo, refunds[0].Version, time.Now().Add(time.Minute), 0); err != nil {
			t.Fatal(err)
		}
		api.queries = append(api.queries, notFound) // no creates scripted: one fails the test
		a, err := svc.Create(ctx, "o-resend", "k-"+no, params)
		if err != nil || a.Status != 202 {
			t.Fatalf("taken-over request: %+v, %v; want 202", a, err)
		}
		checkRefund(t, s, no, ledger.RefundUnknown, 2, 30)
	})
}

// TestRefusedRequestsSpendNoWeChatQuota: with room for one application to
// WeChat Pay, requests the ledger refuses (not the caller's order, no
// such order, more than was paid) spend none of it, so the valid one
// after them still goes out.
func TestRefusedRequestsSpendNoWeChatQuota(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("quota-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){
			func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) { return processing(req.OutRefundNo) }}}
		cfg := gateway.RefundConfig{Calls: gateway.NewMemoryLimiter(), CallLimit: gateway.Limit{PerMinute: 1, Burst: 1}}
		svc := gateway.NewRefundService(cfg, s, api, gateway.NewMemoryLocker())
		refused := []struct {
			openid string
			p      gateway.RefundParams
			code   string
		}{
			{"o-stranger", gateway.RefundParams{OutTradeNo: no, Amount: 30}, gateway.CodeNotFound},
			{"o-resend", gateway.RefundParams{OutTradeNo: "no-such-order", Amount: 30}, gateway.CodeNotFound},
			{"o-resend", gateway.RefundParams{OutTradeNo: no, Amount: 101}, gateway.CodeConflict},
		}
		for i, tc := range refused {
			_, err := svc.Create(ctx, tc.openid, fmt.Sprintf("k-refused-%d", i), tc.p)
			var e *gateway.Error
			if !errors.As(err, &e) || e.Code != tc.code {
				t.Fatalf("request %d: err = %v, want %s", i, err, tc.code)
			}
		}
		a, err := svc.Create(ctx, "o-resend", "k-valid", gateway.RefundParams{OutTradeNo: no, Amount: 30})
		if err != nil || a.Status != 201 {
			t.Fatalf("valid request after refused ones: %+v, %v; want 201", a, err)
		}
		checkRefund(t, s, no, ledger.RefundProcessing, 1, 30)
	})
}

// TestUnrecordableAnswersWaitForTheRecheck: WeChat Pay answers PROCESSING
// for an ABNORMAL refund (not a move the ledger makes) or answers about
// another refund: nothing is recorded, and the refund is next queried at
// its recheck, not at the end of the janitor's 2×call_timeout claim.
func TestUnrecordableAnswersWaitForTheRecheck(t *testing.T) {
	abnormal := func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
		return &gateway.WxRefund{OutRefundNo: req.OutRefundNo, Status: "ABNORMAL", Amount: 30}, nil
	}
	other := func(string) (*gateway.WxRefund, error) { return processing("RF-someone-else") }
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		for i, answer := range []func(string) (*gateway.WxRefund, error){processing, other} {
			no := fmt.Sprintf("recheck-%d-%d", i, time.Now().UnixNano())
			payForResend(t, s, no)
			api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){abnormal},
				queries: []func(string) (*gateway.WxRefund, error){answer}}
			svc := gateway.NewRefundService(gateway.RefundConfig{Recheck: time.Hour, CallTimeout: time.Second}, s, api, gateway.NewMemoryLocker())
			ctx := context.Background()
			if _, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil {
				t.Fatal(err)
			}
			if err := makeDue(s, no); err != nil {
				t.Fatal(err)
			}
			// The later sweep proves something only if this one used the one
			// scripted answer: any query after it is then "unexpected".
			if left := api.queriesLeft(); left != 1 {
				t.Fatalf("%d query answers left before the sweep, want 1 (queried during Create?)", left)
			}
			if n := svc.Sweep(ctx, 10); n != 1 || api.queriesLeft() != 0 {
				t.Fatalf("first sweep looked at %d refunds, %d query answers left; want 1 and 0", n, api.queriesLeft())
			}
			later := gateway.NewRefundService(gateway.RefundConfig{Recheck: time.Hour, CallTimeout: time.Second},
				s.WithClock(func() time.Time { return time.Now().Add(3 * time.Second) }), api, gateway.NewMemoryLocker())
			// Past the claim, before the recheck: nothing to look at.
			if n := later.Sweep(ctx, 10); n != 0 {
				t.Fatalf("later sweep looked at %d refunds, want 0 before the recheck", n)
			}
			checkRefund(t, s, no, ledger.RefundAbnormal, 1, 30)
		}
	})
}

// TestReplayAfterALateSuccessTellsTheTruth: a refund was answered 422
// (refused, then not found at WeChat Pay) and stored for its key; WeChat
// Pay then reports it paid after all. Asking again with the key answers
// the refund's current state (201 SUCCESS), not the stale refusal.
func TestReplayAfterALateSuccessTellsTheTruth(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("late-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){refusedCreate},
			queries: []func(string) (*gateway.WxRefund, error){notFound}}
		svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
		params := gateway.RefundParams{OutTradeNo: no, Amount: 30}
		a, err := svc.Create(ctx, "o-resend", "k-"+no, params)
		if err != nil || a.Status != 422 {
			t.Fatalf("first answer: %+v, %v; want 422", a, err)
		}
		refunds, _ := s.Refunds(ctx, no)
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: refunds[0].OutRefundNo, State: ledger.RefundSuccess,
			RefundID: "wx-late", Source: ledger.SourceCallback}); err != nil {
			t.Fatal(err)
		}
		unreadable := true
		if err := s.DB().Callback().Query().Before("gorm:query").Register("test:refunds_unreadable", func(db *gorm.DB) {
			if unreadable && db.Statement.Table == "refunds" {
				_ = db.AddError(driver.ErrBadConn)
			}
		}); err != nil {
			t.Fatal(err)
		}
		var gerr *gateway.Error
		if a, err := svc.Create(ctx, "o-resend", "k-"+no, params); !errors.As(err, &gerr) || gerr.Code != gateway.CodeUnavailable {
			t.Fatalf("replay while the refund cannot be read: %+v, %v; want EUNAVAILABLE, not the stale refusal", a, err)
		}
		unreadable = false
		again, err := svc.Create(ctx, "o-resend", "k-"+no, params)
		if err != nil || again.Status != 201 || !again.Replayed || !strings.Contains(string(again.Body), `"state":"SUCCESS"`) {
			t.Fatalf("replay after the late success: %+v (%s), %v; want 201 SUCCESS", again, again.Body, err)
		}
	})
}

// TestSlowJanitorLeavesOtherRefundsToOthers: while one instance's janitor
// waits on a slow WeChat Pay answer for one refund, the other stuck
// refunds are not held by its claim: another instance's janitor settles
// them. Before, a sweep claimed its whole batch at once and held the
// refunds it had no time left for until the claim ran out.
func TestSlowJanitorLeavesOtherRefundsToOthers(t *testing.T) {
	abnormal := func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
		return &gateway.WxRefund{OutRefundNo: req.OutRefundNo, Status: "ABNORMAL", Amount: 30}, nil
	}
	settled := func(no string) (*gateway.WxRefund, error) {
		return &gateway.WxRefund{OutRefundNo: no, RefundID: "wx-" + no, Status: "SUCCESS", Amount: 30, SuccessTime: time.Now()}, nil
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		cfg := gateway.RefundConfig{Recheck: time.Hour, CallTimeout: 5 * time.Second}
		var nos []string
		for i := range 2 {
			no := fmt.Sprintf("slowjan-%d-%d", i, time.Now().UnixNano())
			payForResend(t, s, no)
			api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){abnormal}}
			if _, err := gateway.NewRefundService(cfg, s, api, gateway.NewMemoryLocker()).Create(ctx, "o-resend", "k-"+no,
				gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil {
				t.Fatal(err)
			}
			due := time.Now().Add(time.Duration(i-10) * time.Second).UTC()
			if err := s.DB().Exec("UPDATE refunds SET next_check_at = ? WHERE out_trade_no = ?", due, no).Error; err != nil {
				t.Fatal(err)
			}
			nos = append(nos, no)
		}
		started, release := make(chan struct{}), make(chan struct{})
		slow := func(no string) (*gateway.WxRefund, error) {
			close(started)
			<-release
			return settled(no)
		}
		a := gateway.NewRefundService(cfg, s, &scriptedRefunds{t: t, queries: []func(string) (*gateway.WxRefund, error){slow}},
			gateway.NewMemoryLocker())
		done := make(chan int)
		go func() { done <- a.Sweep(ctx, 10) }()
		<-started
		b := gateway.NewRefundService(cfg, s, &scriptedRefunds{t: t, queries: []func(string) (*gateway.WxRefund, error){settled}},
			gateway.NewMemoryLocker())
		if n := b.Sweep(ctx, 10); n != 1 {
			t.Errorf("the other janitor looked at %d refunds while the first waited, want 1", n)
		}
		close(release)
		if n := <-done; n != 1 {
			t.Errorf("the slow janitor looked at %d refunds, want 1", n)
		}
		for _, no := range nos {
			checkRefund(t, s, no, ledger.RefundSuccess, 1, 30)
		}
	})
}

// TestJanitorFinishesTheCheckUnderWayAtShutdown: shutdown (the janitor's
// context ending) while WeChat Pay's answer is on its way: the answer is
// still recorded, and the sweep stops before the next refund.
func TestJanitorFinishesTheCheckUnderWayAtShutdown(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		cfg := gateway.RefundConfig{Recheck: time.Hour, CallTimeout: 5 * time.Second}
		no := abnormalDue(t, s, cfg, "stopjan")
		ctx, stop := context.WithCancel(context.Background())
		slow := func(no string) (*gateway.WxRefund, error) {
			stop() // shutdown begins while the answer is on its way
			return &gateway.WxRefund{OutRefundNo: no, RefundID: "wx-" + no, Status: "SUCCESS", Amount: 30, SuccessTime: time.Now()}, nil
		}
		svc := gateway.NewRefundService(cfg, s, &scriptedRefunds{t: t, queries: []func(string) (*gateway.WxRefund, error){slow}},
			gateway.NewMemoryLocker())
		if n := svc.Sweep(ctx, 10); n != 1 {
			t.Fatalf("sweep looked at %d refunds, want 1", n)
		}
		checkRefund(t, s, no, ledger.RefundSuccess, 1, 30)
	})
}

// TestUsersAreNotShownCallErrors: the refund answer a user gets (and
// GET /v1/refunds/{no}) carries no last_error: a transport error names
// the hosts and proxies the gateway reaches WeChat Pay through. Finance
// still sees it in the ledger.
func TestUsersAreNotShownCallErrors(t *testing.T) {
	inconclusive := func(string) (*gateway.WxRefund, error) { return nil, gateway.ErrOutcomeUnknown }
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		no := fmt.Sprintf("lasterr-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){timedOut},
			queries: []func(string) (*gateway.WxRefund, error){inconclusive}}
		svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
		a, err := svc.Create(context.Background(), "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30})
		if err != nil || a.Status != 202 {
			t.Fatalf("answer: %+v, %v; want 202", a, err)
		}
		refunds, _ := s.Refunds(context.Background(), no)
		if len(refunds) != 1 || !strings.Contains(refunds[0].LastError, "i/o timeout") {
			t.Fatalf("ledger refunds = %+v, want the call error kept", refunds)
		}
		if strings.Contains(string(a.Body), "i/o timeout") || strings.Contains(string(a.Body), "last_error") {
			t.Fatalf("the user's answer shows the call error: %s", a.Body)
		}
	})
}

// TestJanitorRecordsALateSuccessOnceItFits: WeChat Pay paid refund A the
// gateway had concluded FAILED, while refund B held the amount, so A's
// SUCCESS did not fit and was flagged. When B fails (WeChat Pay refused
// it: the money went with A), the janitor's next query of A records its
// SUCCESS, counts its amount and queues its stock release.
func TestJanitorRecordsALateSuccessOnceItFits(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("room-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		a, b := "RF-A-"+no, "RF-B-"+no
		for _, rno := range []string{a, b} {
			if _, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: no, OutRefundNo: rno, Amount: 60,
				Requester: "o-resend", CheckAt: s.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if rno == a {
				mustApply(t, s, ledger.RefundUpdate{OutRefundNo: a, State: ledger.RefundFailed, Source: ledger.SourceAPI}, nil)
			}
		}
		mustApply(t, s, ledger.RefundUpdate{OutRefundNo: a, State: ledger.RefundSuccess, Source: ledger.SourceCallback}, ledger.ErrNoChange)
		mustApply(t, s, ledger.RefundUpdate{OutRefundNo: b, State: ledger.RefundFailed, Source: ledger.SourceAPI}, nil)
		if err := s.DB().Exec("UPDATE refunds SET next_check_at = ? WHERE out_refund_no = ?", time.Now().Add(-time.Second).UTC(), a).Error; err != nil {
			t.Fatal(err)
		}
		paid := func(rno string) (*gateway.WxRefund, error) {
			return &gateway.WxRefund{OutRefundNo: rno, RefundID: "wx-" + rno, Status: "SUCCESS", Amount: 60, SuccessTime: time.Now()}, nil
		}
		api := &scriptedRefunds{t: t, queries: []func(string) (*gateway.WxRefund, error){paid}}
		svc := gateway.NewRefundService(gateway.RefundConfig{CallTimeout: time.Second}, s, api, gateway.NewMemoryLocker())
		if n := svc.Sweep(ctx, 10); n != 1 {
			t.Fatalf("sweep looked at %d refunds, want 1 (A)", n)
		}
		r, err := s.Refund(ctx, a)
		if err != nil || r.State != ledger.RefundSuccess || r.NextCheckAt != nil {
			t.Fatalf("A after the sweep: %+v, %v; want SUCCESS, off the janitor's list", r, err)
		}
		if p, _ := s.Payment(ctx, no); p.RefundedTotal != 60 {
			t.Fatalf("refunded_total = %d, want 60 (A's)", p.RefundedTotal)
		}
		if jobs, _ := s.Outbox().JobsOf(ctx, no); len(jobs) != 2 || jobs[1].Key != "release:"+a {
			t.Fatalf("jobs = %+v, want the confirmation and A's release", jobs)
		}
	})
}

func mustApply(t *testing.T, s *ledger.Store, u ledger.RefundUpdate, want error) {
	t.Helper()
	if _, err := s.ApplyRefund(context.Background(), u); !errors.Is(err, want) && !(want == nil && err == nil) {
		t.Fatalf("apply %s → %s: %v, want %v", u.OutRefundNo, u.State, err, want)
	}
}

// TestJanitorResendSpendsTheCallQuota: a janitor's re-send of a refund
// WeChat Pay does not know spends the merchant's call quota like a new
// refund; with none left it is not sent, and waits for its next check.
func TestJanitorResendSpendsTheCallQuota(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("resend-quota-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){timedOut},
			queries: []func(string) (*gateway.WxRefund, error){notFound, notFound}}
		quota := gateway.Limit{PerMinute: 1, Burst: 1}
		svc := gateway.NewRefundService(gateway.RefundConfig{Calls: gateway.NewMemoryLimiter(), CallLimit: quota}, s, api,
			gateway.NewMemoryLocker())
		if a, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil || a.Status != 202 {
			t.Fatalf("request: %+v %v, want 202", a, err)
		}
		due := func() {
			t.Helper()
			if err := makeDue(s, no); err != nil {
				t.Fatal(err)
			}
		}
		due()
		if n := svc.Sweep(ctx, 10); n != 1 {
			t.Fatalf("janitor checked %d refunds, want 1", n)
		}
		checkRefund(t, s, no, ledger.RefundUnknown, 1, 30) // the quota went to the request: not sent again
		api.mu.Lock()
		api.creates = append(api.creates, func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) { return processing(req.OutRefundNo) })
		api.queries = append(api.queries, notFound)
		api.mu.Unlock()
		fresh := gateway.NewRefundService(gateway.RefundConfig{Calls: gateway.NewMemoryLimiter(), CallLimit: quota}, s, api,
			gateway.NewMemoryLocker())
		due()
		if n := fresh.Sweep(ctx, 10); n != 1 {
			t.Fatalf("janitor checked %d refunds, want 1", n)
		}
		checkRefund(t, s, no, ledger.RefundProcessing, 2, 30)
	})
}

// TestRefusalDoesNotFailALaterAttempt: a refusal settles only the attempt
// it answered. When another instance's janitor sent the refund again
// while the refused one was still asking WeChat Pay about it (a stall
// past the safety buffer), the refusal's FAILED is not recorded: it would
// give the amount back and tell the user "failed" while the later attempt
// may be paid. The later attempt's answer then settles the refund, once.
func TestRefusalDoesNotFailALaterAttempt(t *testing.T) {
	type call = func(gateway.WxRefundRequest) (*gateway.WxRefund, error)
	type query = func(string) (*gateway.WxRefund, error)
	cases := []struct {
		name    string
		creates []call
		queries func(sentAgain query) []query // the request's, then one per sweep
		want    ledger.RefundState            // before the later attempt's answer
	}{
		{"the request's refusal", []call{refusedCreate},
			func(again query) []query { return []query{again} }, ledger.RefundCreated},
		{"the janitor's refused re-send", []call{timedOut, refusedCreate},
			func(again query) []query { return []query{notFound, notFound, again} }, ledger.RefundUnknown},
		{"an unsigned refusal", []call{proxyRefusal},
			func(again query) []query { return []query{notFound, again} }, ledger.RefundUnknown},
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				no := fmt.Sprintf("later-%d-%d", i, time.Now().UnixNano())
				payForResend(t, s, no)
				// What another janitor does before it sends: counts the attempt.
				sentAgain := func(refundNo string) (*gateway.WxRefund, error) {
					r, err := s.Refund(ctx, refundNo)
					if err == nil {
						_, err = s.CountRefundAttempt(ctx, refundNo, r.Version, time.Now().Add(time.Hour), 0)
					}
					if err != nil {
						t.Errorf("another janitor's attempt: %v", err)
					}
					return notFound(refundNo)
				}
				api := &scriptedRefunds{t: t, creates: tc.creates, queries: tc.queries(sentAgain)}
				svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
				logs := captureLogs(t)
				if a, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil || a.Status == 422 {
					t.Fatalf("request: %+v %v, want no refusal", a, err)
				}
				for api.queriesLeft() > 0 {
					if err := makeDue(s, no); err != nil {
						t.Fatal(err)
					}
					if n := svc.Sweep(ctx, 10); n != 1 {
						t.Fatalf("janitor checked %d refunds, want 1", n)
					}
				}
				checkRefund(t, s, no, tc.want, len(tc.creates)+1, 30)
				stale := logLines(t, logs.String(), "verdict on an earlier attempt not recorded")
				if len(stale) != 1 || stale[0]["state"] != string(ledger.RefundFailed) || stale[0]["attempt"] != float64(len(tc.creates)) {
					t.Fatalf("logged %v, want the refused verdict (FAILED on attempt %d) logged once", stale, len(tc.creates))
				}
				rs, _ := s.Refunds(ctx, no)
				if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: rs[0].OutRefundNo, State: ledger.RefundSuccess,
					RefundID: "wx-" + no, Amount: 30, SuccessTime: time.Now(), Source: ledger.SourceQuery}); err != nil {
					t.Fatal(err)
				}
				checkRefund(t, s, no, ledger.RefundSuccess, len(tc.creates)+1, 30)
				if flags, err := s.Anomalies(ctx, no); err != nil || len(flags) != 0 {
					t.Fatalf("anomalies %+v (%v), want none: the refund was never FAILED", flags, err)
				}
			})
		}
	})
}

// TestStalledUnknownIsTiedToItsAttempt: the UNKNOWN an attempt records
// (with what it met, its last_error) speaks for that attempt only. The
// request's attempt met an unsigned refusal and stalled past the safety
// buffer before recording it; meanwhile another instance's janitor sent
// the refund again, and that attempt timed out. Recorded late, the stale
// refusal replaced the timeout in last_error, and the next janitor,
// finding WeChat Pay without the refund, failed it as refused (amount
// given back, the user told 422) instead of sending it again.
func TestStalledUnknownIsTiedToItsAttempt(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		no := fmt.Sprintf("stalled-%d", time.Now().UnixNano())
		payForResend(t, s, no)
		due := func() {
			if err := makeDue(s, no); err != nil {
				t.Fatal(err)
			}
		}
		// Another instance: its janitor finds the refund unknown to WeChat
		// Pay, sends it again (attempt 2), and that call times out.
		other := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){timedOut},
			queries: []func(string) (*gateway.WxRefund, error){notFound}}
		otherSvc := gateway.NewRefundService(gateway.RefundConfig{}, s, other, gateway.NewMemoryLocker())
		stalled := func(gateway.WxRefundRequest) (*gateway.WxRefund, error) {
			due() // the stall outlasts the safety buffer
			if n := otherSvc.Sweep(ctx, 10); n != 1 {
				t.Errorf("other janitor checked %d refunds, want 1", n)
			}
			return proxyRefusal(gateway.WxRefundRequest{})
		}
		accepted := func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
			return processing(req.OutRefundNo)
		}
		api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){stalled, accepted},
			queries: []func(string) (*gateway.WxRefund, error){notFound, notFound}} // the request's, the janitor's
		svc := gateway.NewRefundService(gateway.RefundConfig{}, s, api, gateway.NewMemoryLocker())
		if a, err := svc.Create(ctx, "o-resend", "k-"+no, gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil || a.Status != 202 {
			t.Fatalf("request: %+v %v, want 202", a, err)
		}
		checkRefund(t, s, no, ledger.RefundUnknown, 2, 30)
		due()
		if n := svc.Sweep(ctx, 10); n != 1 {
			t.Fatalf("janitor checked %d refunds, want 1", n)
		}
		// Attempt 2 only timed out: not found, the refund is sent again.
		checkRefund(t, s, no, ledger.RefundProcessing, 3, 30)
		if len(api.creates)+len(api.queries)+len(other.creates)+len(other.queries) != 0 {
			t.Fatalf("calls left unmade: %d creates, %d queries here; %d, %d at the other instance",
				len(api.creates), len(api.queries), len(other.creates), len(other.queries))
		}
	})
}

// makeDue makes the refunds of order no due for the janitor, as if their
// safety buffer had passed, and the order's gap since its last refund
// application with it.
func makeDue(s *ledger.Store, no string) error {
	now := time.Now().UTC()
	if err := s.DB().Exec("UPDATE refunds SET next_check_at = ? WHERE out_trade_no = ?", now.Add(-time.Second), no).Error; err != nil {
		return err
	}
	return s.DB().Exec("UPDATE payments SET refund_sent_at = ? WHERE out_trade_no = ?", now.Add(-10*time.Minute), no).Error
}

// TestJanitorPanicIsNotLeftRunning: a janitor check that panics (a row or
// an answer nobody foresaw) is logged and the janitor starts again; the
// check must not stay counted as under way, or every later shutdown waits
// the refunds' whole budget (Drain) for a check that ended long before,
// and reports it as still running.
func TestJanitorPanicIsNotLeftRunning(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		cfg := gateway.RefundConfig{Recheck: time.Hour, CallTimeout: 2 * time.Second}
		abnormalDue(t, s, cfg, "janpanic")
		boom := func(string) (*gateway.WxRefund, error) { panic("an answer nobody foresaw") }
		svc := gateway.NewRefundService(cfg, s, &scriptedRefunds{t: t, queries: []func(string) (*gateway.WxRefund, error){boom}},
			gateway.NewMemoryLocker())
		func() {
			defer func() {
				if v := recover(); v == nil {
					t.Fatal("the sweep did not panic")
				}
			}()
			svc.Sweep(context.Background(), 10)
		}()
		began := time.Now()
		if !svc.Drain() {
			t.Fatalf("Drain waited %v and reports a janitor check still running; the only one panicked before", time.Since(began).Round(time.Millisecond))
		}
	})
}

// abnormalDue pays a new order, has a refund of 30 of it answered
// ABNORMAL, and makes that refund due for the janitor; it returns the
// order's number.
func abnormalDue(t *testing.T, s *ledger.Store, cfg gateway.RefundConfig, prefix string) string {
	t.Helper()
	abnormal := func(req gateway.WxRefundRequest) (*gateway.WxRefund, error) {
		return &gateway.WxRefund{OutRefundNo: req.OutRefundNo, Status: "ABNORMAL", Amount: 30}, nil
	}
	no := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	payForResend(t, s, no)
	api := &scriptedRefunds{t: t, creates: []func(gateway.WxRefundRequest) (*gateway.WxRefund, error){abnormal}}
	if _, err := gateway.NewRefundService(cfg, s, api, gateway.NewMemoryLocker()).Create(context.Background(), "o-resend", "k-"+no,
		gateway.RefundParams{OutTradeNo: no, Amount: 30}); err != nil {
		t.Fatal(err)
	}
	if err := makeDue(s, no); err != nil {
		t.Fatal(err)
	}
	return no
}
