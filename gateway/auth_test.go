package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// hangingKeys is a key store whose database never answers.
type hangingKeys struct{}

func (hangingKeys) LookupAPIKey(ctx context.Context, _ string) (Principal, bool, error) {
	<-ctx.Done()
	return Principal{}, false, ctx.Err()
}

// TestKeyCheckIsBounded: a route with no timeout of its own (a CSV export
// sets its own later) still gets an answer when the key store hangs: 503,
// not a request held for as long as the client waits.
func TestKeyCheckIsBounded(t *testing.T) {
	gin.SetMode(gin.TestMode)
	a := NewAuth(hangingKeys{})
	if a.Timeout != CheckTimeout {
		t.Fatalf("NewAuth timeout = %v, want %v", a.Timeout, CheckTimeout)
	}
	a.Timeout = 50 * time.Millisecond
	r := gin.New()
	r.GET("/x", a.Require(RoleFinance), func(c *gin.Context) { c.Status(http.StatusOK) })
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("X-Api-Key", "gwk_anything")
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { r.ServeHTTP(w, req); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the key check still waits after 5 s")
	}
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"code":"EUNAVAILABLE"`) {
		t.Fatalf("status=%d body=%s, want 503 EUNAVAILABLE", w.Code, w.Body)
	}
}

func TestCheckProxies(t *testing.T) {
	if err := CheckProxies([]string{"10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"}); err != nil {
		t.Fatalf("good entries refused: %v", err)
	}
	for _, bad := range []string{"10.0.0.0/33", "lb.internal", ""} {
		if err := CheckProxies([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
