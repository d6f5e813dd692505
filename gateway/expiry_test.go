package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestOrderRetryAfterExpireAt (review 4): POST /v1/orders for demo-1
// with expire_at T answers 201; a queued retry of the same body arriving
// after T answers 200 with the stored order (the first expire_at stands,
// as the README says), not 400. A new order with an expire_at not in the
// future is still 400 EINVALID and leaves no row, and a retry with
// another amount after T is still 409.
func TestOrderRetryAfterExpireAt(t *testing.T) {
	gin.SetMode(gin.TestMode)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		var clock atomic.Int64
		clock.Store(t0.UnixNano())
		d := &Deps{MaxBodyBytes: 1 << 16, Store: s.WithClock(func() time.Time { return time.Unix(0, clock.Load()) })}
		r := gin.New()
		r.POST("/v1/orders", d.registerOrder)
		post := func(body string) (int, map[string]any) {
			t.Helper()
			w := httptest.NewRecorder()
			r.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/orders", strings.NewReader(body)))
			var out map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatalf("answer %d is not JSON: %q", w.Code, w.Body.String())
			}
			return w.Code, out
		}
		body := `{"out_trade_no":"demo-1","amount_total":250,"payer_openid":"o-demo","expire_at":"2026-11-30T21:00:00+08:00"}`
		status, first := post(body)
		if status != http.StatusCreated {
			t.Fatalf("register: %d %v", status, first)
		}
		for _, after := range []time.Duration{time.Hour, time.Hour + time.Microsecond, 25 * time.Hour} {
			clock.Store(t0.Add(after).UnixNano())
			status, got := post(body)
			if status != http.StatusOK || got["out_trade_no"] != "demo-1" || got["expire_at"] != first["expire_at"] ||
				got["expected_amount"] != float64(250) || got["state"] != "EXPECTED" {
				t.Fatalf("retry at T+%v: %d %v, want 200 and the stored order %v", after-time.Hour, status, got, first)
			}
		}
		if status, got := post(strings.Replace(body, "250", "251", 1)); status != http.StatusConflict || got["code"] != CodeConflict {
			t.Fatalf("other amount after T: %d %v, want 409 %s", status, got, CodeConflict)
		}
		for name, b := range map[string]string{
			"expire_at now":         `{"out_trade_no":"demo-2","amount_total":100,"expire_at":"2026-12-01T13:00:00Z"}`,
			"expire_at in the past": `{"out_trade_no":"demo-2","amount_total":100,"expire_at":"2026-11-30T21:00:00+08:00"}`,
			"expire_at in 2100":     `{"out_trade_no":"demo-2","amount_total":100,"expire_at":"2100-01-01T00:00:00Z"}`,
		} {
			status, got := post(b)
			if status != http.StatusBadRequest || got["code"] != CodeInvalid || got["message"] != badExpireAt {
				t.Fatalf("%s: %d %v, want 400 %s %q", name, status, got, CodeInvalid, badExpireAt)
			}
		}
		var rows int64
		if err := s.DB().Table("payments").Where("out_trade_no = ?", "demo-2").Count(&rows).Error; err != nil || rows != 0 {
			t.Fatalf("refused new order left %d rows (%v)", rows, err)
		}
		var history int64
		if err := s.DB().Table("state_history").Count(&history).Error; err != nil || history != 1 {
			t.Fatalf("history rows = %d (%v), want demo-1's registration only", history, err)
		}
	})
}
