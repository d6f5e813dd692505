package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// fakeBills serves trade bills from fn and records the days asked for.
type fakeBills struct {
	mu   sync.Mutex
	days []string
	fn   func(ctx context.Context, day string) ([]byte, error)
}

func (f *fakeBills) TradeBill(ctx context.Context, day string) ([]byte, error) {
	f.mu.Lock()
	f.days = append(f.days, day)
	f.mu.Unlock()
	if f.fn == nil {
		return nil, ErrNoStatement
	}
	return f.fn(ctx, day)
}

func (f *fakeBills) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.days...)
}

// TestReconcileOneRunPerDay: while one run (an instance, a request) holds
// a day, another run of it is refused with EIN_FLIGHT before downloading
// anything; a failed run hands the day back at once.
func TestReconcileOneRunPerDay(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		day := ledger.DayOf(s.Now().Add(-24 * time.Hour))
		entered, release := make(chan struct{}), make(chan struct{})
		slow := &Reconciler{Store: s, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			close(entered)
			<-release
			return nil, nil
		}}}
		done := make(chan error, 1)
		go func() {
			_, err := slow.Run(ctx, day, "first")
			done <- err
		}()
		<-entered
		other := &fakeBills{}
		second := &Reconciler{Store: s, Bills: other}
		if _, err := second.Run(ctx, day, "second"); ErrorCode(err) != CodeInFlight || len(other.asked()) != 0 {
			t.Fatalf("second run while the first holds the day: err=%v, downloads=%v", err, other.asked())
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("first run: %v", err)
		}
		failing := &Reconciler{Store: s, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			return nil, errors.New("connection reset")
		}}}
		if _, err := failing.Run(ctx, day, "failing"); ErrorCode(err) != CodeUnavailable {
			t.Fatalf("failing run: err=%v", err)
		}
		rep, err := second.Run(ctx, day, "second")
		if err != nil || rep.Runs != 2 || rep.RequestedBy != "second" {
			t.Fatalf("run after a failed one: %+v, %v", rep, err)
		}
	})
}

func TestDailyWindow(t *testing.T) {
	at := 10*time.Hour + 30*time.Minute
	tests := []struct {
		name        string
		now         time.Time
		first, last string
	}{
		{"before the bill is out", time.Date(2026, 11, 23, 10, 29, 0, 0, ledger.BusinessDay), "2026-11-19", "2026-11-21"},
		{"once the bill is out", time.Date(2026, 11, 23, 10, 30, 0, 0, ledger.BusinessDay), "2026-11-20", "2026-11-22"},
		{"07:00 UTC+8 is the evening before in UTC", time.Date(2026, 11, 23, 23, 0, 0, 0, time.UTC), "2026-11-20", "2026-11-22"},
		// 90 days back would be 31 January, whose bill WeChat Pay keeps no more
		// (1 February is exactly three months back: left out to be safe).
		{"90 days on 1 May", time.Date(2027, 5, 1, 11, 0, 0, 0, ledger.BusinessDay), "2027-02-02", "2027-04-30"},
		{"90 days on 1 May, 01:00 UTC+8", time.Date(2027, 4, 30, 17, 0, 0, 0, time.UTC), "2027-02-02", "2027-04-29"},
		{"90 days in autumn, all kept", time.Date(2026, 11, 23, 10, 30, 0, 0, ledger.BusinessDay), "2026-08-25", "2026-11-22"},
		// Three months before 30 May is the end of February.
		{"90 days on 30 May", time.Date(2027, 5, 30, 11, 0, 0, 0, ledger.BusinessDay), "2027-03-01", "2027-05-29"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lookBack := 3
			if strings.HasPrefix(tc.name, "90 days") {
				lookBack = 90
			}
			first, last := DailyConfig{At: at, LookBack: lookBack}.window(tc.now)
			if first != tc.first || last != tc.last {
				t.Fatalf("window = %s..%s, want %s..%s", first, last, tc.first, tc.last)
			}
		})
	}
}

// TestBillsKeptFrom: the first day whose bill WeChat Pay still serves is
// the day after the same date three months back, cut to that month's end,
// so that it moves on by at most a day a day (time.AddDate would give
// 4 March on 31 May and 2 March on 1 June).
func TestBillsKeptFrom(t *testing.T) {
	for _, tc := range []struct{ now, want string }{
		{"2027-05-01", "2027-02-02"},
		{"2027-05-30", "2027-03-01"},
		{"2027-05-31", "2027-03-01"},
		{"2027-06-01", "2027-03-02"},
		{"2028-02-29", "2027-11-30"},
		{"2027-03-31", "2027-01-01"},
		{"2027-01-15", "2026-10-16"},
	} {
		now, _ := time.ParseInLocation(time.DateOnly, tc.now, ledger.BusinessDay)
		for _, at := range []time.Time{now.Add(time.Minute), now.Add(24*time.Hour - time.Minute)} {
			if got := billsKeptFrom(at); got != tc.want {
				t.Errorf("billsKeptFrom(%v) = %s, want %s", at, got, tc.want)
			}
		}
	}
}

// TestDailyReconcileCatchesUp: a job started after the day's run time
// reconciles at once every day of its window without a report (not the
// ones with one, nor older ones), retries a failing day with backoff
// while the others go on, and a restart picks up a day still failing.
func TestDailyReconcileCatchesUp(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		base, started := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay), time.Now()
		clock := func() time.Time { return base.Add(time.Since(started)) }
		s = s.WithClock(clock)
		payAt(t, s, "p-early", base.AddDate(0, 0, -20))
		done := &fakeBills{fn: emptyBill}
		if _, err := (&Reconciler{Store: s, Bills: done}).Run(context.Background(), "2026-11-21", "earlier"); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		failing := true
		bills := &fakeBills{fn: func(_ context.Context, day string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			if day == "2026-11-20" && failing {
				return nil, errors.New("connection reset")
			}
			return emptyBill(context.Background(), day)
		}}
		r := &Reconciler{Store: s, Bills: bills}
		cfg := DailyConfig{At: 10*time.Hour + 30*time.Minute, Retry: 20 * time.Millisecond, LookBack: 4}
		run := func(until func(map[string]bool) bool) {
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			go func() { r.DailyReconcile(ctx, cfg); close(stopped) }()
			defer func() { cancel(); <-stopped }()
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				got, err := s.ReconciledDays(context.Background(), "2026-11-01", "2026-11-30", "2026-12-01")
				if err == nil && until(got) {
					return
				}
			}
			t.Fatalf("days not reconciled in time; bills asked for %v", bills.asked())
		}
		run(func(got map[string]bool) bool {
			return got["2026-11-19"] && got["2026-11-22"] && countOf(bills.asked(), "2026-11-20") >= 3
		})
		mu.Lock()
		failing = false
		mu.Unlock()
		run(func(got map[string]bool) bool { return got["2026-11-20"] }) // a restart
		asked := bills.asked()
		for day, want := range map[string]int{"2026-11-18": 0, "2026-11-19": 1, "2026-11-21": 0, "2026-11-22": 1, "2026-11-23": 0} {
			if n := countOf(asked, day); n != want {
				t.Fatalf("bill of %s asked %d times, want %d (asked: %v)", day, n, want, asked)
			}
		}
	})
}

// TestDailyReconcileSkipsADayFinishedElsewhere: while the daily job
// catches up, another instance finishes a later day of its window; the
// job does not run that day again (its bill is not downloaded twice).
func TestDailyReconcileSkipsADayFinishedElsewhere(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		base, started := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay), time.Now()
		s = s.WithClock(func() time.Time { return base.Add(time.Since(started)) })
		payAt(t, s, "p-else", base.AddDate(0, 0, -20))
		elsewhere := &Reconciler{Store: s, Bills: &fakeBills{fn: emptyBill}}
		var once sync.Once
		bills := &fakeBills{fn: func(ctx context.Context, day string) ([]byte, error) {
			if day == "2026-11-19" {
				once.Do(func() {
					if _, err := elsewhere.Run(ctx, "2026-11-20", "other-instance"); err != nil {
						t.Errorf("the other instance's run: %v", err)
					}
				})
			}
			return emptyBill(ctx, day)
		}}
		r := &Reconciler{Store: s, Bills: bills}
		cfg := DailyConfig{At: 10*time.Hour + 30*time.Minute, Retry: time.Hour, LookBack: 4, Now: s.Now}
		r.catchUp(context.Background(), cfg.withDefaults(s), map[string]dayRetry{})
		asked := bills.asked()
		for day, want := range map[string]int{"2026-11-19": 1, "2026-11-20": 0, "2026-11-21": 1, "2026-11-22": 1} {
			if n := countOf(asked, day); n != want {
				t.Fatalf("bill of %s asked %d times, want %d (asked: %v)", day, n, want, asked)
			}
		}
	})
}

// emptyBill is a bill file without rows: a day WeChat Pay saw no trade.
func emptyBill(context.Context, string) ([]byte, error) { return []byte{}, nil }

// TestNoBillDaysAreRecheckedWhileRecent: WeChat Pay's "no bill" with a
// ledger that settled nothing is stored NO_BILL, not MATCHED; the daily
// job runs the last two such days again (the bill may be late: each
// lost callback of the day would otherwise never be repaired), not older
// ones.
func TestNoBillDaysAreRecheckedWhileRecent(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		base := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return base })
		payAt(t, s, "p-nobill", base.AddDate(0, 0, -20))
		bills := &fakeBills{}
		r := &Reconciler{Store: s, Bills: bills}
		cfg := DailyConfig{At: 10*time.Hour + 30*time.Minute, LookBack: 4}.withDefaults(s)
		r.catchUp(context.Background(), cfg, map[string]dayRetry{})
		rep, err := s.Reconciliation(context.Background(), "2026-11-19")
		if err != nil || rep.Status != ledger.ReconcileNoBill {
			t.Fatalf("report of a day without a bill: %+v, %v; want NO_BILL", rep, err)
		}
		r.catchUp(context.Background(), cfg, map[string]dayRetry{}) // as after a restart
		for day, want := range map[string]int{"2026-11-19": 1, "2026-11-20": 1, "2026-11-21": 2, "2026-11-22": 2} {
			if n := countOf(bills.asked(), day); n != want {
				t.Fatalf("bill of %s asked %d times, want %d (asked: %v)", day, n, want, bills.asked())
			}
		}
	})
}

func countOf(days []string, day string) int {
	n := 0
	for _, d := range days {
		if d == day {
			n++
		}
	}
	return n
}

// payAt records a payment created and paid at at.
func payAt(t *testing.T, s *ledger.Store, no string, at time.Time) {
	t.Helper()
	u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
		EventType: "TRANSACTION.SUCCESS", OutTradeNo: no, TransactionID: "tx-" + no},
		OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", AmountTotal: 100, PayerTotal: 100,
		Currency: "CNY", SuccessTime: at.UTC()}
	if _, err := s.WithClock(func() time.Time { return at }).ApplyTransaction(context.Background(), u); err != nil {
		t.Fatal(err)
	}
}

// TestDailyReconcileStartsAtFirstPayment: days before the ledger's first
// payment are not reconciled (their payments belong to whatever took them
// then); a ledger without payments has no day due.
func TestDailyReconcileStartsAtFirstPayment(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		bills := &fakeBills{}
		r := &Reconciler{Store: s, Bills: bills}
		cfg := DailyConfig{At: 10*time.Hour + 30*time.Minute, LookBack: 30}.withDefaults(s)
		r.catchUp(context.Background(), cfg, map[string]dayRetry{})
		if asked := bills.asked(); len(asked) != 0 {
			t.Fatalf("empty ledger: bills asked for %v", asked)
		}
		payAt(t, s, "p-first", time.Date(2026, 11, 21, 9, 0, 0, 0, ledger.BusinessDay))
		r.catchUp(context.Background(), cfg, map[string]dayRetry{})
		if asked := bills.asked(); len(asked) != 2 || asked[0] != "2026-11-21" || asked[1] != "2026-11-22" {
			t.Fatalf("bills asked for %v, want 2026-11-21 and 2026-11-22", asked)
		}
	})
}

// TestTakeOverDaysAreDueWithAnEmptyLedger: with TakeOver set, its days
// are reconciled even while the ledger has no payment at all (every
// callback of those days refused, say): the bill is what would repair them.
func TestTakeOverDaysAreDueWithAnEmptyLedger(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		bills := &fakeBills{}
		r := &Reconciler{Store: s, Bills: bills, TakeOver: time.Date(2026, 11, 21, 9, 0, 0, 0, ledger.BusinessDay)}
		r.catchUp(context.Background(), DailyConfig{At: 10*time.Hour + 30*time.Minute, LookBack: 30}.withDefaults(s), map[string]dayRetry{})
		if asked := bills.asked(); len(asked) != 2 || asked[0] != "2026-11-21" || asked[1] != "2026-11-22" {
			t.Fatalf("bills asked for %v, want 2026-11-21 and 2026-11-22", asked)
		}
	})
}

// billHeader is the header of WeChat Pay's ALL trade bill.
const billHeader = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"

// TestReconcileStartsAtTakeOver: with TakeOver set, the daily job runs no
// day before it (though the ledger has older payments), and on the
// take-over day a bill payment from before it that the ledger does not
// know is reported DEFERRED, not recorded; one after it is repaired.
func TestReconcileStartsAtTakeOver(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		payAt(t, s, "p-old", time.Date(2026, 11, 18, 9, 0, 0, 0, ledger.BusinessDay))
		line := func(at, tx, no string) string { return paidLine("2026-11-21 "+at, "wx1", tx, no) }
		bills := &fakeBills{fn: func(_ context.Context, day string) ([]byte, error) {
			if day != "2026-11-21" {
				return emptyBill(context.Background(), day)
			}
			return []byte(billHeader + "\r\n" + line("08:00:00", "tx-before", "before") + line("10:00:00", "tx-after", "after-1")), nil
		}}
		r := &Reconciler{Store: s, Bills: bills, TakeOver: time.Date(2026, 11, 21, 9, 0, 0, 0, ledger.BusinessDay)}
		cfg := DailyConfig{At: 10*time.Hour + 30*time.Minute, LookBack: 30}.withDefaults(s)
		r.catchUp(context.Background(), cfg, map[string]dayRetry{})
		if asked := bills.asked(); len(asked) != 2 || asked[0] != "2026-11-21" || asked[1] != "2026-11-22" {
			t.Fatalf("bills asked for %v, want 2026-11-21 and 2026-11-22", asked)
		}
		rep, err := s.Reconciliation(context.Background(), "2026-11-21")
		if err != nil || rep.Repaired != 1 || rep.Mismatches != 2 {
			t.Fatalf("take-over day: %+v, %v", rep, err)
		}
		for _, it := range rep.Items {
			if want := map[string]string{"before": ledger.RepairDeferred, "after-1": ledger.RepairApplied}[it.OutTradeNo]; it.Repair != want {
				t.Fatalf("%s: repair %q, want %q", it.OutTradeNo, it.Repair, want)
			}
		}
		if _, err := s.Payment(context.Background(), "before"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("the old system's payment was recorded: %v", err)
		}
	})
}

// TestWithoutTakeOverTheFirstPaymentIsIt: without TakeOver, the ledger's
// first payment marks when the gateway took over. A bill payment from
// before it that the ledger does not know (the previous system's, which
// fulfilled it) is DEFERRED, not recorded: on the first day's morning,
// and on an earlier day run by hand, which the daily job never runs. One
// after it (a lost callback) is repaired.
func TestWithoutTakeOverTheFirstPaymentIsIt(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		payAt(t, s, "p-first", time.Date(2026, 11, 21, 9, 0, 0, 0, ledger.BusinessDay))
		line := func(day, at, tx, no string) string { return paidLine(day+" "+at, "wx1", tx, no) }
		bills := &fakeBills{fn: func(_ context.Context, day string) ([]byte, error) {
			return []byte(billHeader + "\r\n" + line(day, "08:00:00", "tx-"+day+"-a", "old-"+day) +
				line(day, "10:00:00", "tx-"+day+"-b", "late-"+day)), nil
		}}
		r := &Reconciler{Store: s, Bills: bills}
		want := map[string]string{"old-2026-11-18": ledger.RepairDeferred, "late-2026-11-18": ledger.RepairDeferred,
			"old-2026-11-21": ledger.RepairDeferred, "late-2026-11-21": ledger.RepairApplied}
		for _, day := range []string{"2026-11-18", "2026-11-21"} {
			rep, err := r.Run(context.Background(), day, "finance")
			if err != nil {
				t.Fatalf("run %s: %v", day, err)
			}
			for _, it := range rep.Items {
				if it.Repair != want[it.OutTradeNo] {
					t.Errorf("%s: repair %q (%s), want %q", it.OutTradeNo, it.Repair, it.RepairDetail, want[it.OutTradeNo])
				}
			}
		}
		for no, repair := range want {
			_, err := s.Payment(context.Background(), no)
			if recorded := err == nil; recorded != (repair == ledger.RepairApplied) {
				t.Errorf("%s: recorded %v (%v), want %v", no, recorded, err, repair == ledger.RepairApplied)
			}
		}
	})
}

// TestOneReconciliationByHandPerInstance: a run asked for over the API
// holds a bill and a back-office slot for minutes, so while one runs on
// an instance another (even of another day) gets 429 at once, and finance
// reads go on.
func TestOneReconciliationByHandPerInstance(t *testing.T) {
	gin.SetMode(gin.TestMode)
	s := ledgertest.OpenSQLite(t)
	entered, release := make(chan struct{}), make(chan struct{})
	now := s.Now() // one instant: day(1) names the same day before and after a midnight (UTC+8) during the test
	day := func(n int) string { return ledger.DayOf(now.Add(-time.Duration(n) * 24 * time.Hour)) }
	slowDay := day(1)
	f := &Finance{Reconciler: &Reconciler{Store: s, Bills: &fakeBills{fn: func(_ context.Context, d string) ([]byte, error) {
		if d == slowDay {
			close(entered)
			<-release
		}
		return nil, nil
	}}}}
	auth := NewAuth(StaticKeys{HashKey("fin-key"): {Name: "fin", Role: RoleFinance}})
	r := NewRouter(Deps{Store: s, Auth: auth, Routes: []func(*gin.Engine, *Deps){f.Routes}})
	call := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("X-Api-Key", "fin-key")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w
	}
	var once sync.Once
	finish := func() { once.Do(func() { close(release) }) }
	defer finish() // a failure below must not leave the first run waiting
	first := make(chan int, 1)
	go func() { first <- call("POST", "/v1/reconciliations", `{"date":"`+day(1)+`"}`).Code }()
	<-entered
	if w := call("POST", "/v1/reconciliations", `{"date":"`+day(2)+`"}`); w.Code != http.StatusTooManyRequests ||
		w.Header().Get("Retry-After") != "60" {
		t.Fatalf("second run while one goes on: %d %s, want 429 with Retry-After", w.Code, w.Body)
	}
	if w := call("GET", "/v1/ledger/totals?from="+day(3)+"&to="+day(1), ""); w.Code != http.StatusOK {
		t.Fatalf("finance read during the run: %d %s", w.Code, w.Body)
	}
	finish()
	if code := <-first; code != http.StatusOK {
		t.Fatalf("first run: %d", code)
	}
	if w := call("POST", "/v1/reconciliations", `{"date":"`+day(2)+`"}`); w.Code != http.StatusOK {
		t.Fatalf("run after the first ended: %d %s", w.Code, w.Body)
	}
}

// TestTooLargeBillIsRetriedDaily: a bill larger than the gateway
// reconciles is refused 422 EUNPROCESSABLE with the reason, and the daily
// job asks for that day again a day later, not within hours (each try
// downloads a quarter of a gigabyte for nothing).
func TestTooLargeBillIsRetriedDaily(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		base := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return base })
		payAt(t, s, "p-large", base.AddDate(0, 0, -1))
		r := &Reconciler{Store: s, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			return nil, fmt.Errorf("download: over 268435456 bytes: %w", ErrBillTooLarge)
		}}}
		_, err := r.Run(context.Background(), "2026-11-22", "test")
		if ErrorCode(err) != CodeUnprocessable || !strings.Contains(err.Error(), "larger than the gateway reconciles") {
			t.Fatalf("run on a too large bill: %v, want EUNPROCESSABLE naming the size", err)
		}
		cfg := DailyConfig{At: 10*time.Hour + 30*time.Minute, LookBack: 2}.withDefaults(s)
		rt, again := r.runDay(context.Background(), cfg, "2026-11-22", dayRetry{})
		if !again || rt.next.Sub(base) < 24*time.Hour {
			t.Fatalf("retry of a too large bill at %v (again %v), want a day later", rt.next.Sub(base), again)
		}
	})
}

// TestPaymentSettledAfterTheNoBillCheckFailsTheRun: WeChat Pay has no bill
// of the day and the ledger had nothing settled when the run looked, but a
// payment (a callback redelivered) is recorded before the comparison. The
// run fails 503, to be tried again, and stores nothing: a MISMATCHED day
// reporting the payment missing from the bill would be final.
func TestPaymentSettledAfterTheNoBillCheckFailsTheRun(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, base *ledger.Store) {
		now := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		var noBill atomic.Bool
		var once sync.Once
		// With an empty ledger and no TakeOver, the run reads the clock for
		// the take-over after its look for settlements and before the
		// comparison: the payment lands there.
		s := base.WithClock(func() time.Time {
			if noBill.Load() {
				once.Do(func() { payAt(t, base, "p-late", now.Add(-24*time.Hour)) })
			}
			return now
		})
		r := &Reconciler{Store: s, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			noBill.Store(true)
			return nil, ErrNoStatement
		}}}
		_, err := r.Run(context.Background(), "2026-11-22", "test")
		if ErrorCode(err) != CodeUnavailable || !errors.Is(err, ledger.ErrBillNotOut) {
			t.Fatalf("run: err = %v, want EUNAVAILABLE from the comparison (ErrBillNotOut)", err)
		}
		if rep, err := s.Reconciliation(context.Background(), "2026-11-22"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a report was stored: %+v, %v", rep, err)
		}
	})
}

// unknownRefunds answers every refund query with an unknown outcome (WeChat
// Pay down or hanging) and counts the queries.
type unknownRefunds struct{ queries atomic.Int64 }

func (u *unknownRefunds) CreateRefund(context.Context, WxRefundRequest) (*WxRefund, error) {
	return nil, ErrOutcomeUnknown
}

func (u *unknownRefunds) QueryRefund(context.Context, string) (*WxRefund, error) {
	u.queries.Add(1)
	return nil, fmt.Errorf("%w: i/o timeout", ErrOutcomeUnknown)
}

// TestAcceptanceLookupStopsWhenWeChatDoesNotAnswer: the run's look-up of
// refunds without an acceptance time stops at the first query WeChat Pay
// leaves unanswered, instead of waiting out each of the others before the
// bill; the run goes on.
func TestAcceptanceLookupStopsWhenWeChatDoesNotAnswer(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Date(2026, 11, 22, 15, 0, 0, 0, ledger.BusinessDay)
		s = s.WithClock(func() time.Time { return now })
		ctx := context.Background()
		for i := range 3 {
			no := fmt.Sprintf("acc-%d", i)
			paidBy(t, s, no, "o-acc")
			r, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: no, OutRefundNo: "RF" + no, Amount: 10,
				Requester: "o-acc", CheckAt: now.Add(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: r.OutRefundNo, State: ledger.RefundSuccess,
				Source: ledger.SourceCallback}); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(24 * time.Hour)
		wx := &unknownRefunds{}
		r := &Reconciler{Store: s, Bills: &fakeBills{fn: emptyBill}, Refunds: wx}
		if _, err := r.Run(ctx, "2026-11-22", "test"); err != nil {
			t.Fatal(err)
		}
		if n := wx.queries.Load(); n != 1 {
			t.Fatalf("%d queries to a WeChat Pay that does not answer, want 1", n)
		}
	})
}

// paidLine is a trade bill's row of a 1-yuan JSAPI payment of order no
// (transaction tx, app app) at when ("2006-01-02 15:04:05").
func paidLine(when, app, tx, no string) string {
	return "`" + when + ",`" + app + ",`190,`0,`,`" + tx + ",`" + no + ",`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.00,`0.00,`0,`0,`0.00,`0.00,`,`,`goods,`,`0.00,`0.60%,`1.00,`0.00,`\r\n"
}
