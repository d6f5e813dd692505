package gateway_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"paygateway/gateway"
)

// TestWrongKeyLockoutIgnoresWhatTheGuesserSends: the wrong-key lockout
// counts by the client's address as the router sees it, and nothing the
// guesser chooses buys it fresh guesses: not its user agent, request id
// or query, not an X-Forwarded-For or X-Real-IP sent straight to the
// gateway, and, behind a trusted proxy, not the entries it puts in front
// of the address the proxy appends. Past the burst its right key is
// refused too (429), while another client is served.
func TestWrongKeyLockoutIgnoresWhatTheGuesserSends(t *testing.T) {
	gin.SetMode(gin.TestMode)
	for _, c := range []struct {
		name    string
		proxies []string
		remote  string // the connection's address
		forward func(i int) string
		other   func(req *http.Request)
	}{
		{"direct", nil, "192.0.2.7",
			func(i int) string { return fmt.Sprintf("198.51.100.%d", i) },
			func(req *http.Request) { req.RemoteAddr = "192.0.2.8:4000" }},
		{"behind a trusted proxy", []string{"10.0.0.9"}, "10.0.0.9",
			func(i int) string { return fmt.Sprintf("198.51.100.%d, 192.0.2.7", i) },
			func(req *http.Request) { req.Header.Set("X-Forwarded-For", "192.0.2.8") }},
		// Some load balancers write each entry with its port; the client
		// is still told apart from the proxy (and from another client).
		{"behind a trusted proxy writing ports", []string{"10.0.0.9"}, "10.0.0.9",
			func(i int) string { return fmt.Sprintf("198.51.100.%d:5000, 192.0.2.7:4711", i) },
			func(req *http.Request) { req.Header.Set("X-Forwarded-For", "192.0.2.8:4711") }},
		{"behind a trusted proxy writing IPv6 ports", []string{"10.0.0.9"}, "10.0.0.9",
			func(i int) string { return fmt.Sprintf("[2001:db8::%d]:5000,[2001:db8::7]:4711", i+1) },
			func(req *http.Request) { req.Header.Set("X-Forwarded-For", "[2001:db8:1::8]:4711") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := gateway.NewAuth(gateway.StaticKeys{gateway.HashKey("right"): {Name: "fin", Role: gateway.RoleFinance}})
			a.Failures, a.FailureLimit = gateway.NewMemoryLimiter(), gateway.Limit{PerMinute: 1, Burst: 3}
			r := gateway.NewRouter(gateway.Deps{Auth: a, TrustedProxies: c.proxies})
			send := func(i int, key string, edit func(*http.Request)) int {
				req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("/v1/ledger/payments/no-%d?n=%d", i, i), nil)
				req.RemoteAddr = c.remote + ":4000"
				req.Header.Set("X-Api-Key", key)
				req.Header.Set("User-Agent", fmt.Sprintf("guesser/%d", i))
				req.Header.Set("X-Request-Id", fmt.Sprintf("guess-%d", i))
				req.Header.Set("X-Real-IP", fmt.Sprintf("203.0.113.%d", i))
				req.Header.Set("X-Forwarded-For", c.forward(i))
				if edit != nil {
					edit(req)
				}
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				return w.Code
			}
			for i := range 3 {
				if code := send(i, fmt.Sprintf("wrong-%d", i), nil); code != http.StatusUnauthorized {
					t.Fatalf("wrong key %d of the burst: %d, want 401", i+1, code)
				}
			}
			for i := 3; i < 6; i++ {
				if code := send(i, fmt.Sprintf("wrong-%d", i), nil); code != http.StatusTooManyRequests {
					t.Fatalf("wrong key %d past the burst, sent with new headers: %d, want 429", i+1, code)
				}
			}
			if code := send(6, "right", nil); code != http.StatusTooManyRequests {
				t.Fatalf("the right key from the locked-out client: %d, want 429", code)
			}
			// Another client is not locked out: its wrong key is answered 401.
			if code := send(7, "wrong-other", c.other); code != http.StatusUnauthorized {
				t.Fatalf("another client's wrong key: %d, want 401", code)
			}
		})
	}
}
