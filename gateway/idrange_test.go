package gateway

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestIDOutOfRange: an anomaly or outbox job id past what the ledger's
// ids can hold (above 2^63-1) is bad input, refused 400 EINVALID on every
// database, not handed to the driver (SQLite's refuses such a uint64, and
// the caller was told 503 "ledger unavailable, try again").
func TestIDOutOfRange(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		gin.SetMode(gin.TestMode)
		auth := NewAuth(StaticKeys{HashKey("fin-key"): {Name: "fin", Role: RoleFinance},
			HashKey("ops-key"): {Name: "ops", Role: RoleOps}})
		r := NewRouter(Deps{Store: s, Auth: auth, Routes: []func(*gin.Engine, *Deps){(&Finance{}).Routes, OutboxRoutes}})
		for _, id := range []string{"9223372036854775808", "18446744073709551615"} {
			for path, key := range map[string]string{"/v1/ledger/anomalies/" + id + "/resolve": "fin-key",
				"/v1/ops/outbox/" + id + "/replay": "ops-key"} {
				req := httptest.NewRequest("POST", path, strings.NewReader(`{"resolution":"x"}`))
				req.Header.Set("X-Api-Key", key)
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				var body struct{ Code string }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != 400 || body.Code != CodeInvalid {
					t.Errorf("POST %s: %d %s, want 400 EINVALID", path, w.Code, w.Body)
				}
			}
		}
	})
}
