package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// numberList is a list of ids 1..rows whose reads fail from failAt on
// (0: never).
func numberList(rows, failAt uint64) listDef[uint64] {
	return listDef[uint64]{name: "numbers", header: []string{"id"},
		id:  func(n uint64) uint64 { return n },
		row: func(n uint64) []string { return []string{num(int64(n))} },
		each: func(*ledger.Store) func(context.Context, ledger.ListQuery, func(uint64) error) error {
			return func(_ context.Context, q ledger.ListQuery, fn func(uint64) error) error {
				for n := q.AfterID + 1; n <= rows && n <= q.AfterID+uint64(q.Limit); n++ {
					if failAt != 0 && n >= failAt {
						return errors.New("database gone")
					}
					if err := fn(n); err != nil {
						return err
					}
				}
				return nil
			}
		}}
}

// exportServer serves def's CSV export at /export over real HTTP.
func exportServer(t *testing.T, def listDef[uint64]) *httptest.Server {
	gin.SetMode(gin.TestMode)
	d := &Deps{APITimeout: 10 * time.Second}
	f := &Finance{}
	r := gin.New()
	r.Use(recovery())
	r.GET("/export", func(c *gin.Context) {
		req, err := parseList(c, listFilters{})
		if err != nil {
			writeError(c, err)
			return
		}
		exportList(c, d, f, def, req)
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

// TestExportFailingMidwayIsCutOff: an export whose database read fails
// after the first chunk was sent ends with the connection cut, so the
// client sees a broken download, never a 200 that looks like the whole
// ledger but stops at row 1,000.
func TestExportFailingMidwayIsCutOff(t *testing.T) {
	srv := exportServer(t, numberList(5000, exportChunk+1))
	resp, err := http.Get(srv.URL + "/export?format=csv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("an export that failed after %d rows read whole (%d bytes, status %d), want the connection cut",
			exportChunk, len(body), resp.StatusCode)
	}
}

// TestExportTakesItsLimit: an export given limit has that many rows, not
// the whole list.
func TestExportTakesItsLimit(t *testing.T) {
	srv := exportServer(t, numberList(5000, 0))
	resp, err := http.Get(srv.URL + "/export?format=csv&limit=3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(body) != "id\n1\n2\n3\n" {
		t.Fatalf("export with limit=3: %d %q %v, want the header and rows 1-3", resp.StatusCode, body, err)
	}
}

// TestPageLimitIsBounded: a page asks for 1-1000 rows; more is refused
// 400 rather than read into memory.
func TestPageLimitIsBounded(t *testing.T) {
	gin.SetMode(gin.TestMode)
	for q, ok := range map[string]bool{"limit=1000": true, "limit=1001": false, "limit=0": false} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("GET", "/x?"+q, nil)
		if _, err := parseList(c, listFilters{}); (err == nil) != ok {
			t.Errorf("%s: err=%v, want accepted=%v", q, err, ok)
		}
	}
}

// TestTotalsCoverAtMost366Days: a totals request spans at most 366
// business days, both ends counted: one day more is refused 400.
func TestTotalsCoverAtMost366Days(t *testing.T) {
	gin.SetMode(gin.TestMode)
	now := time.Date(2025, 6, 1, 4, 0, 0, 0, time.UTC)
	d := &Deps{Store: ledgertest.OpenSQLite(t).WithClock(func() time.Time { return now })}
	r := gin.New()
	r.GET("/totals", d.totals)
	for q, want := range map[string]int{"from=2024-01-02&to=2025-01-01": 200, "from=2024-01-01&to=2025-01-01": 400} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("GET", "/totals?"+q, nil))
		if w.Code != want {
			t.Errorf("totals %s: %d %s, want %d", q, w.Code, strings.TrimSpace(w.Body.String()), want)
		}
	}
}

// TestListTimeRangeMustBeForward: a list whose from is not before its to
// is refused 400, not answered with an empty page that reads as "nothing
// happened".
func TestListTimeRangeMustBeForward(t *testing.T) {
	gin.SetMode(gin.TestMode)
	for q, ok := range map[string]bool{
		"from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z": true,
		"from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z": false,
		"from=2025-01-01T00:00:00Z&to=2025-01-01T00:00:00Z": false,
	} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("GET", "/x?"+q, nil)
		if _, err := parseList(c, listFilters{}); (err == nil) != ok {
			t.Errorf("%s: err=%v, want accepted=%v", q, err, ok)
		}
	}
}
