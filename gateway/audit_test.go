package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"paygateway/ledger/ledgertest"
)

// TestAuditRecordsAPanicAs500: a handler that panics is answered 500 by
// the recovery, and its audit entry says 500 too, not the 200 gin holds
// until something is written; a handler that answers records its status.
func TestAuditRecordsAPanicAs500(t *testing.T) {
	gin.SetMode(gin.TestMode)
	s := ledgertest.OpenSQLite(t)
	r := gin.New()
	r.Use(recovery(), func(c *gin.Context) { c.Set(principalKey, Principal{Name: "ops1", Role: RoleOps}) })
	r.POST("/boom", auditTrail(s), func(*gin.Context) { panic("a bad row") })
	r.POST("/fine", auditTrail(s), func(c *gin.Context) { c.Status(http.StatusCreated) })
	for path, want := range map[string]int{"/boom": http.StatusInternalServerError, "/fine": http.StatusCreated} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("POST", path, nil))
		if w.Code != want {
			t.Fatalf("%s answered %d, want %d", path, w.Code, want)
		}
		log, err := s.AuditLog(context.Background(), 1)
		if err != nil || len(log) != 1 || log[0].Path != path || log[0].Status != want {
			t.Fatalf("%s: audit %+v (%v), want status %d", path, log, err, want)
		}
	}
}
