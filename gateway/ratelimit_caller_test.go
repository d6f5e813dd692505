package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// TestRateLimitKeyedOnTheCallerAlone: a caller's budget is its API key's
// principal (PrincipalKey) or its token's openid (ScopedKey), whatever
// else it sends: a request id, user agent, forwarded-for header, query
// string or source address of its choosing must not buy it a fresh
// budget. Another principal, or another openid, has its own.
func TestRateLimitKeyedOnTheCallerAlone(t *testing.T) {
	gin.SetMode(gin.TestMode)
	limit := Limit{PerMinute: 1, Burst: 2}
	secret := []byte("0123456789abcdef0123456789abcdef")
	jwtAuth, err := NewJWTAuth(JWTConfig{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	auth := NewAuth(StaticKeys{HashKey("k-fin"): {Name: "fin", Role: RoleFinance},
		HashKey("k-ops"): {Name: "ops", Role: RoleOps}})
	l := NewMemoryLimiter()
	r := gin.New()
	ok := func(c *gin.Context) { c.Status(http.StatusOK) }
	r.GET("/keyed", auth.Authenticate(), RateLimit(l, PrincipalKey("ledger"), limit), ok)
	r.GET("/user", jwtAuth.Require(nil), RateLimit(l, ScopedKey("refunds", CurrentOpenID), limit), ok)
	tokenOf := func(openid string) string {
		tok, err := SignDevToken(secret, openid, "", "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	call := func(path, header, value string, i int) int {
		req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("%s?n=%d", path, i), nil)
		req.RemoteAddr = fmt.Sprintf("192.0.2.%d:%d", 10+i, 40000+i)
		req.Header.Set(header, value)
		req.Header.Set("X-Request-Id", fmt.Sprintf("req-%d", i))
		req.Header.Set("User-Agent", fmt.Sprintf("agent/%d", i))
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		req.Header.Set("X-Real-IP", fmt.Sprintf("203.0.113.%d", i))
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	for _, c := range []struct {
		name, path, header, caller, other string
	}{
		{"api key", "/keyed", "X-Api-Key", "k-fin", "k-ops"},
		{"user token", "/user", "Authorization", "Bearer " + tokenOf("o-limited"), "Bearer " + tokenOf("o-other")},
	} {
		t.Run(c.name, func(t *testing.T) {
			for i := range 2 {
				if got := call(c.path, c.header, c.caller, i); got != http.StatusOK {
					t.Fatalf("request %d within the burst: %d, want 200", i, got)
				}
			}
			for i := 2; i < 5; i++ {
				if got := call(c.path, c.header, c.caller, i); got != http.StatusTooManyRequests {
					t.Fatalf("request %d over the burst, with its own request id, agent, address and query: %d, want 429", i, got)
				}
			}
			if got := call(c.path, c.header, c.other, 0); got != http.StatusOK {
				t.Fatalf("another caller: %d, want 200 (its own budget)", got)
			}
		})
	}
}
