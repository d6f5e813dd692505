package compensate

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// unpaid answers NOTPAY for every order until it is closed, and counts
// the queries per order.
type unpaid struct {
	mu      sync.Mutex
	queries map[string]int
	closed  map[string]bool
}

func (u *unpaid) QueryOrder(_ context.Context, no string) (*wechatpay.Transaction, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.queries[no]++
	state := "NOTPAY"
	if u.closed[no] {
		state = "CLOSED"
	}
	return &wechatpay.Transaction{OutTradeNo: no, TradeState: state}, nil
}

func (u *unpaid) CloseOrder(_ context.Context, no string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed[no] = true
	return nil
}

func (u *unpaid) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, q := range u.queries {
		n += q
	}
	return n
}

// TestChecksSpaceOutAsOrdersAge: an unpaid order is first asked about
// once the safety buffer has passed, then after a quarter of its age (at
// least the run interval, at most max_interval), and on its expire_at,
// when it is closed. Every due order is checked in one run, page after
// page.
func TestChecksSpaceOutAsOrdersAge(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx := context.Background()
		for _, no := range []string{"age-1", "age-2", "age-3"} {
			o := ledger.Order{OutTradeNo: no, AmountTotal: 100, ExpireAt: t0.Add(3*time.Hour + 7*time.Minute)}
			if _, err := s.RegisterOrder(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		wx := &unpaid{queries: map[string]int{}, closed: map[string]bool{}}
		job := New(Config{Interval: time.Minute, SafetyBuffer: 5 * time.Minute, MaxInterval: 10 * time.Minute, Batch: 1}, s, wx)
		runSteps(t, job, wx, func(at time.Duration) { now = t0.Add(at) }, []step{
			{4 * time.Minute, 0}, // within the safety buffer
			{5 * time.Minute, 3}, // due: all three, one per page
			{6 * time.Minute, 0}, // next at 5m + max(5m/4, 1m) = 6m15s
			{6*time.Minute + 15*time.Second, 3},
			{3 * time.Hour, 3},                   // long due; next in min(3h/4, 10m)
			{3*time.Hour + 5*time.Minute, 0},     // not yet
			{3*time.Hour + 7*time.Minute, 3 * 2}, // its expire_at: query, close, query again
			{4 * time.Hour, 0},                   // closed: never again
		})
		if p, _ := s.Payment(ctx, "age-2"); p.State != ledger.PaymentClosed {
			t.Fatalf("expired order: state %s, want CLOSED", p.State)
		}
	})
}

// stalled never answers a query about one order before its caller gives up.
type stalled struct {
	unpaid
	slow string
}

func (s *stalled) QueryOrder(ctx context.Context, no string) (*wechatpay.Transaction, error) {
	if no == s.slow {
		s.mu.Lock()
		s.queries[no]++
		s.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.unpaid.QueryOrder(ctx, no)
}

// TestASlowCheckDoesNotStallTheRun: a check that outlasts its time (WeChat
// Pay hanging on one order) leaves that order scheduled like any other,
// and the run goes on to the next orders instead of failing on it, run
// after run.
func TestASlowCheckDoesNotStallTheRun(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx := context.Background()
		for _, no := range []string{"slow-1", "slow-2"} {
			if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 100, ExpireAt: t0.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		wx := &stalled{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, slow: "slow-1"}
		job := New(Config{Interval: time.Minute, SafetyBuffer: time.Minute, Batch: 10, CheckTimeout: 50 * time.Millisecond}, s, wx)
		now = t0.Add(2 * time.Minute)
		if _, err := job.RunOnce(ctx); err != nil {
			t.Fatalf("run with one order hanging: %v", err)
		}
		now = now.Add(time.Second)
		if _, err := job.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if wx.queries["slow-1"] != 1 || wx.queries["slow-2"] != 1 {
			t.Fatalf("queries %v, want each order asked once (both scheduled)", wx.queries)
		}
	})
}

// paidOther answers that every order was paid amount fen in currency,
// and counts queries.
type paidOther struct {
	unpaid
	amount   int64
	currency string
}

func (p *paidOther) QueryOrder(_ context.Context, no string) (*wechatpay.Transaction, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queries[no]++
	return &wechatpay.Transaction{OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", MchID: "1900000001",
		AmountTotal: p.amount, PayerTotal: p.amount, Currency: p.currency, SuccessTime: time.Now()}, nil
}

// TestOtherCurrencyIsAskedAboutDaily: an order WeChat Pay says was paid in
// a currency other than CNY is refused by the ledger and flagged once; it
// is then asked about again a day later, not every run.
func TestOtherCurrencyIsAskedAboutDaily(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx := context.Background()
		o := ledger.Order{OutTradeNo: "mis-1", AmountTotal: 100, ExpireAt: t0.Add(48 * time.Hour)}
		if _, err := s.RegisterOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		wx := &paidOther{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, amount: 100, currency: "USD"}
		var results []string
		job := New(Config{Interval: time.Minute, SafetyBuffer: time.Minute, MaxInterval: 10 * time.Minute, Batch: 10,
			Observe: func(r string) { results = append(results, r) }}, s, wx)
		runSteps(t, job, wx, func(at time.Duration) { now = t0.Add(at) }, []step{
			{2 * time.Minute, 1},              // due: asked, refused, flagged
			{30 * time.Minute, 0},             // not every run
			{23 * time.Hour, 0},               // nor every max_interval
			{24*time.Hour + 3*time.Minute, 1}, // a day after the check at 2m
		})
		p, _ := s.Payment(ctx, "mis-1")
		a, err := s.Anomalies(ctx, "mis-1")
		if p.State != ledger.PaymentExpected || err != nil || len(a) != 1 || len(results) != 2 || results[0] != Mismatch {
			t.Fatalf("payment %s, anomalies %+v (%v), results %v; want EXPECTED, one flag, two mismatches", p.State, a, err, results)
		}
	})
}

// TestOtherAmountIsRecovered: an order WeChat Pay says was paid another
// amount (in CNY) than registered, whose callback never came, is recorded
// as the callback would be: paid with what WeChat Pay took, flagged
// AMOUNT_MISMATCH, its stock confirmation held for a person. The result is
// Recovered, and the order, paid, is not asked about again.
func TestOtherAmountIsRecovered(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx := context.Background()
		o := ledger.Order{OutTradeNo: "mis-2", AmountTotal: 100, ExpireAt: t0.Add(48 * time.Hour)}
		if _, err := s.RegisterOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		wx := &paidOther{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, amount: 999, currency: "CNY"}
		var results []string
		job := New(Config{Interval: time.Minute, SafetyBuffer: time.Minute, MaxInterval: 10 * time.Minute, Batch: 10,
			Observe: func(r string) { results = append(results, r) }}, s, wx)
		runSteps(t, job, wx, func(at time.Duration) { now = t0.Add(at) }, []step{
			{2 * time.Minute, 1},              // due: asked, recorded
			{24*time.Hour + 3*time.Minute, 0}, // paid: never again
		})
		p, _ := s.Payment(ctx, "mis-2")
		if p.State != ledger.PaymentSuccess || p.AmountTotal != 999 || p.ExpectedAmount != 100 || len(results) != 1 || results[0] != Recovered {
			t.Fatalf("payment %+v, results %v; want SUCCESS with the 999 paid, one recovered", p, results)
		}
		a, err := s.Anomalies(ctx, "mis-2")
		if err != nil || len(a) != 1 || a[0].Kind != ledger.AnomalyAmountMismatch || a[0].Ref != "paid:tx-mis-2" {
			t.Fatalf("anomalies %+v (%v), want one AMOUNT_MISMATCH", a, err)
		}
		jobs, err := s.Outbox().JobsOf(ctx, "mis-2")
		if err != nil || len(jobs) != 1 || jobs[0].State != ledger.JobDead || !strings.HasPrefix(jobs[0].LastError, "held: ") {
			t.Fatalf("jobs %+v (%v), want the confirmation held (DEAD)", jobs, err)
		}
	})
}

// step is a run of the job at t0+at and the queries it must make.
type step struct {
	at      time.Duration
	queries int
}

// runSteps sets the clock (at) for each step, runs the job once and
// checks the queries that run made.
func runSteps(t *testing.T, job *Job, wx interface{ total() int }, at func(time.Duration), steps []step) {
	t.Helper()
	for _, st := range steps {
		at(st.at)
		before := wx.total()
		if _, err := job.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := wx.total() - before; got != st.queries {
			t.Fatalf("run at t0+%v: %d queries, want %d", st.at, got, st.queries)
		}
	}
}

// paidBy answers that every order was paid in full, by the merchant and
// app it names, with its transaction id ("" is tx-<order>) and payer
// openid.
type paidBy struct {
	unpaid
	mchID, appID, txID, openid string
}

func (p *paidBy) QueryOrder(_ context.Context, no string) (*wechatpay.Transaction, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queries[no]++
	return &wechatpay.Transaction{OutTradeNo: no, TransactionID: cmp.Or(p.txID, "tx-"+no), TradeState: "SUCCESS",
		MchID: p.mchID, AppID: p.appID, PayerOpenID: p.openid, AmountTotal: 100, PayerTotal: 100, Currency: "CNY",
		SuccessTime: time.Now()}, nil
}

// TestForeignAnswersAreRefused: a query answer naming another merchant or
// another app, or a paid one naming none, is refused, as such a callback
// is: the order stays unpaid and nothing is recorded. The same answer for
// this merchant and app is recorded.
func TestForeignAnswersAreRefused(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		cases := []struct {
			no, mchID, appID string
			want             ledger.PaymentState
		}{
			{"frn-mch", "1900000999", "wxapp", ledger.PaymentExpected},
			{"frn-app", "1900000001", "wxother", ledger.PaymentExpected},
			{"frn-none", "1900000001", "", ledger.PaymentExpected},
			{"frn-nomch", "", "wxapp", ledger.PaymentExpected},
			{"frn-own", "1900000001", "wxapp", ledger.PaymentSuccess},
		}
		for _, c := range cases {
			wx := &paidBy{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, mchID: c.mchID, appID: c.appID}
			results := checkOnce(t, s, c.no, wx)
			p, _ := s.Payment(ctx, c.no)
			h, _ := s.History(ctx, c.no)
			if wx.total() != 1 || p.State != c.want || (c.want == ledger.PaymentExpected) != (len(h) == 1) {
				t.Errorf("%s: %d queries, state %s, %d history rows (results %v); want 1 query and %s",
					c.no, wx.total(), p.State, len(h), results, c.want)
			}
		}
	})
}

// paidAs answers every query with a payment in full of the order it names
// (no: another than the one asked about, or none).
type paidAs struct {
	unpaid
	no string
}

func (p *paidAs) QueryOrder(_ context.Context, asked string) (*wechatpay.Transaction, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queries[asked]++
	return &wechatpay.Transaction{OutTradeNo: p.no, TransactionID: "tx-" + asked, TradeState: "SUCCESS", MchID: "1900000001",
		AppID: "wxapp", AmountTotal: 100, PayerTotal: 100, Currency: "CNY", SuccessTime: time.Now()}, nil
}

// TestAnswersAboutAnotherOrderAreRefused: a query answer naming another
// order than the one asked about, or none, is a failed check: nothing is
// written, neither to the order asked about nor to the one named.
func TestAnswersAboutAnotherOrderAreRefused(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		ctx := context.Background()
		register := func(no string, at time.Time) {
			now = at
			if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 100, ExpireAt: t0.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		register("oth-named", t0.Add(2*time.Minute)) // too young to be checked itself
		for i, named := range []string{"oth-named", ""} {
			asked := fmt.Sprintf("oth-asked-%d", i)
			register(asked, t0)
			now = t0.Add(2 * time.Minute)
			wx := &paidAs{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, no: named}
			var results []string
			job := New(Config{SafetyBuffer: time.Minute, Batch: 10, MchID: "1900000001", AppID: "wxapp",
				Observe: func(r string) { results = append(results, r) }}, s, wx)
			if _, err := job.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			if wx.queries[asked] != 1 || len(results) != 1 || results[0] != Failed {
				t.Fatalf("answer naming %q: queries %v, results %v; want one failed check of %s", named, wx.queries, results, asked)
			}
			for _, no := range []string{asked, "oth-named"} {
				p, _ := s.Payment(ctx, no)
				if h, _ := s.History(ctx, no); p.State != ledger.PaymentExpected || len(h) != 1 {
					t.Errorf("answer naming %q: %s is %s with %d history rows, want it untouched", named, no, p.State, len(h))
				}
			}
		}
	})
}

// slowUnpaid is unpaid with a pause in every query, so that two runs
// overlap.
type slowUnpaid struct{ unpaid }

func (s *slowUnpaid) QueryOrder(ctx context.Context, no string) (*wechatpay.Transaction, error) {
	time.Sleep(2 * time.Millisecond)
	return s.unpaid.QueryOrder(ctx, no)
}

// TestInstancesShareTheChecks: two instances' runs at once over the same
// due orders ask WeChat Pay about each order once between them, not once
// each: an order another instance claimed since the page was read is left
// to it.
func TestInstancesShareTheChecks(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		s := base.WithClock(func() time.Time { return t0.Add(10 * time.Minute) })
		ctx := context.Background()
		const orders = 40
		for i := range orders {
			o := ledger.Order{OutTradeNo: fmt.Sprintf("share-%02d", i), AmountTotal: 100, ExpireAt: t0.Add(time.Hour)}
			if _, err := base.WithClock(func() time.Time { return t0 }).RegisterOrder(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		wx := &slowUnpaid{unpaid{queries: map[string]int{}, closed: map[string]bool{}}}
		cfg := Config{Interval: time.Minute, SafetyBuffer: time.Minute, MaxInterval: 10 * time.Minute, Batch: 8}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 2 {
			job := New(cfg, s, wx)
			wg.Go(func() {
				<-start
				if _, err := job.RunOnce(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(wx.queries) != orders {
			t.Fatalf("%d of %d orders asked about", len(wx.queries), orders)
		}
		for no, n := range wx.queries {
			if n != 1 {
				t.Errorf("%s asked about %d times, want once", no, n)
			}
		}
	})
}

// TestShutdownHandsTheCheckBack: a check that shutdown cuts short hands
// its order back, so another instance asks about it at once instead of
// after the interval its claim set.
func TestShutdownHandsTheCheckBack(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		t0 := time.Now().UTC().Truncate(time.Second)
		now := t0
		s := base.WithClock(func() time.Time { return now })
		if _, err := s.RegisterOrder(context.Background(), ledger.Order{OutTradeNo: "stop-1", AmountTotal: 100,
			ExpireAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		now = t0.Add(2 * time.Minute)
		cfg := Config{Interval: time.Minute, SafetyBuffer: time.Minute, MaxInterval: 10 * time.Minute, Batch: 10}
		hung := &stalled{unpaid: unpaid{queries: map[string]int{}, closed: map[string]bool{}}, slow: "stop-1"}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _, _ = New(cfg, s, hung).RunOnce(ctx) }()
		for deadline := time.Now().Add(10 * time.Second); hung.total() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the order was never checked")
			}
		}
		stop() // SIGTERM while WeChat Pay has not answered
		<-done
		other := &unpaid{queries: map[string]int{}, closed: map[string]bool{}}
		if _, err := New(cfg, s, other).RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if other.queries["stop-1"] != 1 {
			t.Fatalf("the other instance asked %d times about the order cut short, want once", other.queries["stop-1"])
		}
	})
}

// checkOnce registers order no (100 fen, expiring in an hour) and runs one
// pass of a job of merchant 1900000001, app wxapp, that asks wx about it at
// once; it returns the pass's results.
func checkOnce(t *testing.T, s *ledger.Store, no string, wx Querier) []string {
	t.Helper()
	ctx := context.Background()
	if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var results []string
	job := New(Config{SafetyBuffer: time.Nanosecond, Batch: 10, MchID: "1900000001", AppID: "wxapp",
		Observe: func(r string) { results = append(results, r) }}, s, wx)
	time.Sleep(time.Millisecond) // past the safety buffer
	if _, err := job.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	return results
}
