package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// unreadableBill is a bill the parser refuses: its record is cut short on
// line 2.
const unreadableBill = billHeader + "\r\n`2026-11-22 09:00:00,`wx1,`190\r\n"

// TestUnreadableBillIsReportedAndRecheckedDaily: a bill the parser refuses
// fails the run with EBILL_UNREADABLE (422) but stores the day's report,
// UNREADABLE with the parser's reason; the daily job runs that day again a
// day later, not within hours, nor at once after a restart; a run that
// reads the bill replaces the report.
func TestUnreadableBillIsReportedAndRecheckedDaily(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		base := time.Date(2026, 11, 23, 15, 0, 0, 0, ledger.BusinessDay)
		var shift atomic.Int64
		s = s.WithClock(func() time.Time { return base.Add(time.Duration(shift.Load())) })
		payAt(t, s, "p-unreadable", base.AddDate(0, 0, -20))
		const day = "2026-11-22"
		var fixed atomic.Bool
		bills := &fakeBills{fn: func(_ context.Context, d string) ([]byte, error) {
			if d == day && !fixed.Load() {
				return []byte(unreadableBill), nil
			}
			return []byte{}, nil
		}}
		r := &Reconciler{Store: s, Bills: bills}
		_, err := r.Run(ctx, day, "alice")
		if ErrorCode(err) != CodeBillUnreadable || Status(err) != http.StatusUnprocessableEntity ||
			!errors.Is(err, ledger.ErrBillUnreadable) {
			t.Fatalf("run on an unreadable bill: %v, want 422 EBILL_UNREADABLE", err)
		}
		assertUnreadable(t, s, day, "alice")

		cfg := DailyConfig{At: 10*time.Hour + 30*time.Minute, LookBack: 3}.withDefaults(s)
		rt, again := r.runDay(ctx, cfg, day, dayRetry{})
		if !again || rt.next.Sub(cfg.Now()) < 24*time.Hour {
			t.Fatalf("retry of an unreadable bill in %v (again %v), want a day later", rt.next.Sub(cfg.Now()), again)
		}
		r.catchUp(ctx, cfg, map[string]dayRetry{}) // as after a restart
		if n := countOf(bills.asked(), day); n != 2 {
			t.Fatalf("bill of %s asked %d times, want 2 (no run within the day): %v", day, n, bills.asked())
		}
		shift.Store(int64(25 * time.Hour))
		r.catchUp(ctx, cfg, map[string]dayRetry{})
		if n := countOf(bills.asked(), day); n != 3 {
			t.Fatalf("bill of %s asked %d times, want 3 (run again a day later): %v", day, n, bills.asked())
		}

		fixed.Store(true)
		rep, err := r.Run(ctx, day, "bob")
		if err != nil || rep.Status != ledger.ReconcileMatched {
			t.Fatalf("run on the bill fixed: %+v, %v", rep, err)
		}
		if got, err := s.Reconciliation(ctx, day); err != nil || got.Status != ledger.ReconcileMatched ||
			len(got.Items) != 0 || got.RequestedBy != "bob" {
			t.Fatalf("report after the bill was fixed: %+v, %v; want MATCHED without items", got, err)
		}
	})
}

// assertUnreadable checks the stored report of an unreadable bill.
func assertUnreadable(t *testing.T, s *ledger.Store, day, by string) {
	t.Helper()
	rep, err := s.Reconciliation(context.Background(), day)
	if err != nil || rep.Status != ledger.ReconcileUnreadable || rep.RequestedBy != by || len(rep.Items) != 1 {
		t.Fatalf("report of an unreadable bill: %+v, %v; want UNREADABLE with one item", rep, err)
	}
	it := rep.Items[0]
	if it.Kind != ledger.MismatchBillUnreadable || it.Repair != ledger.RepairDeferred ||
		!strings.Contains(it.RepairDetail, "trade bill line 2: ") {
		t.Fatalf("item of an unreadable bill: %+v, want BILL_UNREADABLE naming line 2", it)
	}
}

// TestUnreadableBillOverHTTP: POST answers 422 EBILL_UNREADABLE, GET
// serves the UNREADABLE report, and the audit entry of the POST names the
// day (sent in the body, not in the path) with who asked and the outcome.
func TestUnreadableBillOverHTTP(t *testing.T) {
	gin.SetMode(gin.TestMode)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		day := ledger.DayOf(s.Now().Add(-24 * time.Hour))
		f := &Finance{Reconciler: &Reconciler{Store: s, Bills: &fakeBills{fn: func(context.Context, string) ([]byte, error) {
			return []byte(unreadableBill), nil
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
		w := call("POST", "/v1/reconciliations", `{"date":"`+day+`"}`)
		var answer struct{ Code, Message string }
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil || w.Code != http.StatusUnprocessableEntity ||
			answer.Code != CodeBillUnreadable || !strings.Contains(answer.Message, "UNREADABLE") {
			t.Fatalf("POST on an unreadable bill: %d %s, want 422 EBILL_UNREADABLE", w.Code, w.Body)
		}
		w = call("GET", "/v1/reconciliations/"+day, "")
		var rep ledger.Reconciliation
		if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil || w.Code != http.StatusOK ||
			rep.Status != ledger.ReconcileUnreadable || len(rep.Items) != 1 || rep.Items[0].Kind != ledger.MismatchBillUnreadable {
			t.Fatalf("GET of an unreadable day: %d %s", w.Code, w.Body)
		}
		entries, err := s.AuditLog(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		post := auditEntryOf(entries, "POST", "/v1/reconciliations")
		if post == nil || post.Target != "date="+day || post.Principal != "fin" || post.Status != http.StatusUnprocessableEntity {
			t.Fatalf("audit entry of the POST: %+v, want fin, date=%s, 422 (log: %+v)", post, day, entries)
		}
	})
}

func auditEntryOf(entries []ledger.AuditEntry, method, path string) *ledger.AuditEntry {
	for i := range entries {
		if entries[i].Method == method && entries[i].Path == path {
			return &entries[i]
		}
	}
	return nil
}
