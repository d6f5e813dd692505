package gateway

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// auditedRouter serves POST /act behind auditTrail for an ops caller,
// running handler.
func auditedRouter(s *ledger.Store, handler gin.HandlerFunc) *gin.Engine {
	gin.SetMode(gin.TestMode)
	r := gin.New()
	r.Use(recovery(), func(c *gin.Context) { c.Set(principalKey, Principal{Name: "ops1", Role: RoleOps}) })
	r.POST("/act", auditTrail(s), handler)
	return r
}

// TestRequestWithoutAnAuditEntryIsNotServed: when the audit entry cannot
// be written, the request is refused 503 and its handler never runs:
// nothing is served (a replay, a resolution) without a record of who did it.
func TestRequestWithoutAnAuditEntryIsNotServed(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		if err := s.DB().Exec("DROP TABLE audit_log").Error; err != nil {
			t.Fatal(err)
		}
		ran := false
		r := auditedRouter(s, func(c *gin.Context) { ran = true; c.Status(http.StatusOK) })
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("POST", "/act", nil))
		if w.Code != http.StatusServiceUnavailable || ran {
			t.Fatalf("with the audit log unwritable: %d, handler ran=%v; want 503 and not run", w.Code, ran)
		}
	})
}

// TestOutcomeIsAuditedAfterTheClientLeft: a request whose client went
// away (its context cancelled) before it ended still has its outcome
// written to its audit entry: a replay that ran must not look unfinished.
func TestOutcomeIsAuditedAfterTheClientLeft(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx, leave := context.WithCancel(context.Background())
		r := auditedRouter(s, func(c *gin.Context) {
			leave() // the client hangs up while the request runs
			c.Status(http.StatusAccepted)
		})
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("POST", "/act", nil).WithContext(ctx))
		log, err := s.AuditLog(context.Background(), 1)
		if err != nil || len(log) != 1 || log[0].Status != http.StatusAccepted || log[0].FinishedAt == nil {
			t.Fatalf("audit of a request whose client left: %+v (%v), want status 202 and finished", log, err)
		}
	})
}

// TestUnwritableAuditTargetRefusesTheRequest: auditTarget reports a
// failure to note what the request acts on, so the caller answers 503
// rather than running a reconciliation whose entry does not name its day.
func TestUnwritableAuditTargetRefusesTheRequest(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		var noted error
		r := auditedRouter(s, func(c *gin.Context) {
			if err := s.DB().Exec("ALTER TABLE audit_log RENAME TO audit_log_gone").Error; err != nil {
				t.Error(err)
			}
			noted = auditTarget(c, s, "date=2025-01-15")
			c.Status(http.StatusOK)
		})
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/act", nil))
		if noted == nil {
			t.Fatal("auditTarget with the audit log unwritable: no error, want the request refused")
		}
	})
}

// TestDeadJobListingIsBounded: a listing of dead jobs asks for 1-500; a
// larger limit is refused 400 rather than read into memory whole.
func TestDeadJobListingIsBounded(t *testing.T) {
	gin.SetMode(gin.TestMode)
	d := &Deps{Store: ledgertest.OpenSQLite(t)}
	r := gin.New()
	r.GET("/dead", d.listDeadJobs)
	for q, want := range map[string]int{"limit=500": 200, "limit=501": 400, "limit=0": 400, "": 200} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("GET", "/dead?"+q, nil))
		if w.Code != want {
			t.Errorf("GET /dead?%s: %d, want %d", q, w.Code, want)
		}
	}
}

// TestNotificationBodyIsCappedByDefault: a router given no MaxBodyBytes
// still caps a body at 64 KiB: 413 before any of it is parsed.
func TestNotificationBodyIsCappedByDefault(t *testing.T) {
	gin.SetMode(gin.TestMode)
	r := NewRouter(Deps{})
	big := httptest.NewRequest("POST", "/v1/wechatpay/notify/payment", bytes.NewReader(make([]byte, 64<<10+1)))
	w := httptest.NewRecorder()
	r.ServeHTTP(w, big)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body of 64 KiB + 1: %d %s, want 413", w.Code, w.Body)
	}
}
