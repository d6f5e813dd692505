package gateway_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"

	"paygateway/gateway"
	"paygateway/gateway/redisstore/redistest"
)

// TestParallelGuessesGetAtMostTheBurstOnRedis: 200 wrong keys sent at once
// from one address, counted in the shared Redis limiter, get at most the
// burst of 401s; the rest are refused 429 unchecked.
func TestParallelGuessesGetAtMostTheBurstOnRedis(t *testing.T) {
	gin.SetMode(gin.TestMode)
	a := gateway.NewAuth(gateway.StaticKeys{gateway.HashKey("right"): {Name: "fin", Role: gateway.RoleFinance}})
	a.Failures, a.FailureLimit = redistest.Store(t), gateway.Limit{PerMinute: 1, Burst: 20}
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 200 {
		wg.Go(func() {
			<-start
			req := httptest.NewRequest("GET", "/x", nil)
			req.RemoteAddr, req.Header["X-Api-Key"] = "10.0.0.1:4000", []string{fmt.Sprintf("guess-%d", i)}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			mu.Lock()
			codes[w.Code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if codes[http.StatusUnauthorized] > 20 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 200 {
		t.Fatalf("answers %v: want at most 20 × 401, the rest 429", codes)
	}
}
