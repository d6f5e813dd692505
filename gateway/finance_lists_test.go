package gateway

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// financeRouter serves the finance routes of s to the key "fin-key".
func financeRouter(s *ledger.Store) func(path, accept string) *httptest.ResponseRecorder {
	gin.SetMode(gin.TestMode)
	auth := NewAuth(StaticKeys{HashKey("fin-key"): {Name: "fin", Role: RoleFinance}})
	r := NewRouter(Deps{Store: s, Auth: auth, Routes: []func(*gin.Engine, *Deps){(&Finance{}).Routes}})
	return func(path, accept string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("X-Api-Key", "fin-key")
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w
	}
}

// TestFinanceNotificationFiltersNeedAnIndex: a notification filter no
// index serves (source; a transaction or refund the ledger cannot place in
// an order) is refused 400 EINVALID, saying what to add, unless from (or
// an order) bounds the read; with it, the rows are those asked for. A CSV
// export is refused the same way, before any row is sent.
func TestFinanceNotificationFiltersNeedAnIndex(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		now := time.Now().UTC()
		for _, st := range []string{
			`INSERT INTO payments (out_trade_no, transaction_id, state, currency, created_at, updated_at) VALUES ('o1', 'tx1', 'SUCCESS', 'CNY', ?, ?)`,
			`INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no, transaction_id, plaintext, received_at)
				VALUES ('n1', 'callback', 'TRANSACTION.SUCCESS', 'encrypt-resource', 'o1', 'tx1', '{}', ?)`,
			`INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no, transaction_id, plaintext, received_at)
				VALUES ('n2', 'query', 'TRANSACTION.SUCCESS', 'encrypt-resource', 'o2', 'tx-odd', '{}', ?)`,
		} {
			if err := s.DB().Exec(st, slices.Repeat([]any{now}, strings.Count(st, "?"))...).Error; err != nil {
				t.Fatal(err)
			}
		}
		get := financeRouter(s)
		since := "&from=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339))
		for _, c := range []struct {
			query, accept string
			want          string // notify ids, or the start of the refusal
		}{
			{query: "source=callback", want: "the notifications have no index on source: give it with out_trade_no, transaction_id, out_refund_no or from"},
			{query: "source=callback&to=2099-01-01T00:00:00Z", want: "the notifications have no index on source"},
			{query: "source=callback", accept: "text/csv", want: "the notifications have no index on source"},
			{query: "transaction_id=tx-odd", want: "the ledger has no payment or refund with this transaction_id, and the notifications have no index on it: give it with out_trade_no or from"},
			{query: "out_refund_no=rf-none", want: "the ledger has no payment or refund with this out_refund_no"},
			{query: "source=callback" + since, want: "n1"},
			{query: "source=callback&transaction_id=tx1", want: "n1"},
			{query: "transaction_id=tx-odd" + since, want: "n2"},
			{query: "transaction_id=tx-odd&out_trade_no=o2", want: "n2"},
			{query: "out_refund_no=rf-none" + since, want: ""},
		} {
			w := get("/v1/ledger/notifications?"+c.query, c.accept)
			got := noticeAnswer(t, w)
			refusal := strings.HasPrefix(c.want, "the ")
			if refusal != (w.Code == 400) || (refusal && !strings.HasPrefix(got, c.want)) || (!refusal && got != c.want) {
				t.Errorf("%s (%s): %d %q, want %q", c.query, c.accept, w.Code, got, c.want)
			}
		}
	})
}

// noticeAnswer is the notify ids of a 200 page, joined by ",", or the
// message of a 400 EINVALID.
func noticeAnswer(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Code, Message string
		Items         []ledger.NoticeListItem
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	if w.Code == 400 && body.Code == CodeInvalid {
		return body.Message
	}
	if w.Code != 200 {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	ids := make([]string, len(body.Items))
	for i, n := range body.Items {
		ids[i] = n.NotifyID
	}
	return strings.Join(ids, ",")
}

// TestFinanceListsFromATimePage: payments and outbox jobs since a time,
// walked page by page through next_cursor and exported as CSV, are every
// row at or after it once, in id order, also a row recorded after later
// ones.
func TestFinanceListsFromATimePage(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		for i, h := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 4, 9} { // the last two out of time order
			at := base.Add(time.Duration(h) * time.Hour)
			no := fmt.Sprintf("o%02d", i)
			if err := s.DB().Exec(`INSERT INTO payments (out_trade_no, state, currency, created_at, updated_at) VALUES (?, 'EXPECTED', 'CNY', ?, ?)`,
				no, at, at).Error; err != nil {
				t.Fatal(err)
			}
			if err := s.DB().Exec(`INSERT INTO outbox_jobs (kind, job_key, out_trade_no, payload, state, next_run_at, created_at, updated_at)
				VALUES (?, ?, ?, '{}', 'DONE', ?, ?, ?)`, ledger.JobConfirmInventory, "confirm:"+no, no, at, at, at).Error; err != nil {
				t.Fatal(err)
			}
		}
		get := financeRouter(s)
		from := base.Add(5 * time.Hour)
		const want = "o04,o05,o06,o07,o08,o09,o10,o11,o13"
		for _, list := range []string{"payments", "outbox-jobs"} {
			path := "/v1/ledger/" + list + "?from=" + url.QueryEscape(from.Format(time.RFC3339))
			if got := walkOrders(t, get, path+"&limit=2"); got != want {
				t.Errorf("%s pages: %s, want %s", list, got, want)
			}
			if got := csvOrders(t, get(path, "text/csv")); got != want {
				t.Errorf("%s CSV: %s, want %s", list, got, want)
			}
		}
	})
}

// walkOrders follows next_cursor from path and returns the out_trade_no
// of every item, joined by ",".
func walkOrders(t *testing.T, get func(string, string) *httptest.ResponseRecorder, path string) string {
	t.Helper()
	var orders []string
	for cursor, pages := "", 0; pages == 0 || cursor != ""; pages++ {
		w := get(path+"&cursor="+cursor, "")
		var body struct {
			Items []struct {
				OutTradeNo string `json:"out_trade_no"`
			}
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); w.Code != http.StatusOK || err != nil || pages > 20 {
			t.Fatalf("page %d of %s: %d %s (%v)", pages, path, w.Code, w.Body, err)
		}
		for _, it := range body.Items {
			orders = append(orders, it.OutTradeNo)
		}
		cursor = body.NextCursor
	}
	return strings.Join(orders, ",")
}

// csvOrders returns the out_trade_no column of a CSV export, joined by ",".
func csvOrders(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(w.Body.Bytes())).ReadAll()
	if w.Code != http.StatusOK || err != nil || len(recs) == 0 {
		t.Fatalf("csv: %d %s (%v)", w.Code, w.Body, err)
	}
	col := -1
	for i, h := range recs[0] {
		if h == "out_trade_no" {
			col = i
		}
	}
	var orders []string
	for _, r := range recs[1:] {
		orders = append(orders, r[col])
	}
	return strings.Join(orders, ",")
}
