package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestTwoIdempotencyKeysLeaveNoTrace: POST /v1/refunds carrying two
// Idempotency-Key headers is 400 before anything is recorded or sent. The
// handler reads the first; a proxy or a client library that keeps the
// last sees another key, and its retry under that one would refund again.
func TestTwoIdempotencyKeysLeaveNoTrace(t *testing.T) {
	gin.SetMode(gin.TestMode)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		paidBy(t, s, "twokey-1", "o-twokey")
		wx := &countedRefunds{}
		svc := NewRefundService(RefundConfig{CallTimeout: 3 * time.Second}, s, wx, NewMemoryLocker())
		d := &Deps{APITimeout: time.Second, MaxBodyBytes: 1 << 16}
		r := gin.New()
		r.POST("/v1/refunds", func(c *gin.Context) { c.Set(openIDKey, "o-twokey"); createRefund(c, d, svc) })
		req := httptest.NewRequest("POST", "/v1/refunds", strings.NewReader(`{"out_trade_no":"twokey-1","amount":40}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("Idempotency-Key", "k-first")
		req.Header.Add("Idempotency-Key", "k-second")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"code":"`+CodeInvalid+`"`) {
			t.Fatalf("two Idempotency-Key headers: %d %s, want 400 %s", w.Code, w.Body, CodeInvalid)
		}
		var refunds, keys int64
		s.DB().Table("refunds").Count(&refunds)
		s.DB().Table("idempotency_keys").Count(&keys)
		if refunds != 0 || keys != 0 || wx.n.Load() != 0 {
			t.Fatalf("%d refunds, %d keys, %d WeChat Pay applications; want none", refunds, keys, wx.n.Load())
		}
	})
}
