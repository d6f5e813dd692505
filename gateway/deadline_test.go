package gateway

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// TestRoutesAreBoundedByTheirTimeout: a route group's timeout puts a
// deadline on the request's context, so a hung database or Redis cannot
// hold a notification past WeChat Pay's 5 s; a JSON finance page gets it
// too, and only an export (its own, longer bound) goes without.
func TestRoutesAreBoundedByTheirTimeout(t *testing.T) {
	gin.SetMode(gin.TestMode)
	const d = time.Minute
	for _, tc := range []struct {
		name    string
		bound   gin.HandlerFunc
		accept  string
		bounded bool
	}{
		{"timeout", timeout(d), "", true},
		{"a JSON page", timeoutUnlessLong(d), "application/json", true},
		{"a CSV export", timeoutUnlessLong(d), "text/csv", false},
	} {
		var deadline time.Time
		var has bool
		r := gin.New()
		r.GET("/x", tc.bound, func(c *gin.Context) { deadline, has = c.Request.Context().Deadline() })
		req := httptest.NewRequest("GET", "/x", nil)
		req.Header.Set("Accept", tc.accept)
		start := time.Now()
		r.ServeHTTP(httptest.NewRecorder(), req)
		switch {
		case has != tc.bounded:
			t.Errorf("%s: deadline set=%v, want %v", tc.name, has, tc.bounded)
		case has && (deadline.Before(start) || deadline.After(time.Now().Add(d))):
			t.Errorf("%s: deadline %v, want within %v of the request", tc.name, deadline, d)
		}
	}
}
