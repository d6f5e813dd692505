package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"paygateway/cmd/internal/stack"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestDriverCountsWhatWasAnswered2xx: the driver counts a notification
// accepted only on a 2xx, and a 2xx for one the ledger never stored is
// "accepted-but-lost" twice over (missing at the end, and not committed by
// the answer); one stored before its 2xx is no violation, and one never
// answered 2xx is given up, not accepted.
func TestDriverCountsWhatWasAnswered2xx(t *testing.T) {
	keys, err := wxpaysim.GenerateKeys("1900000109", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name             string
		status           int
		stores           bool
		accepted, gaveUp int
		lost             int
	}{
		{"stored, then 204", http.StatusNoContent, true, 1, 0, 0},
		{"204, never stored", http.StatusNoContent, false, 1, 0, 2},
		{"stored, then 503 until the deadline", http.StatusServiceUnavailable, true, 0, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := ledgertest.OpenMySQL(t)
			db, err := store.DB().DB()
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var errs []error
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var n struct {
					ID string `json:"id"`
				}
				err := json.NewDecoder(r.Body).Decode(&n)
				if err == nil && tc.stores {
					_, err = store.ApplyTransaction(ctx, ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: n.ID,
						Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource",
						OutTradeNo: "C1", Plaintext: "{}"}, OutTradeNo: "C1", TransactionID: "42C1", TradeState: "SUCCESS",
						AmountTotal: 100, PayerTotal: 100, SuccessTime: time.Now()})
				}
				if errors.Is(err, ledger.ErrAlreadyRecorded) { // a redelivery of what was stored
					err = nil
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			sim := wxpaysim.New(keys, wxpaysim.Options{})
			defer sim.Close()
			d := &driver{w: &world{sql: db, sim: sim, id: &stack.Identity{Keys: keys}},
				o: Options{Concurrency: 1, DeliveryTimeout: 300 * time.Millisecond}, url: srv.URL, client: srv.Client(),
				accepted: map[string]string{}}
			d.run(ctx, []delivery{{order: &order{no: "C1", amount: 100}}})
			mu.Lock()
			for _, err := range errs {
				t.Errorf("gateway: %v", err)
			}
			mu.Unlock()
			if len(d.accepted) != tc.accepted || len(d.gaveUp) != tc.gaveUp {
				t.Fatalf("accepted %v, gave up %v; want %d and %d", d.accepted, d.gaveUp, tc.accepted, tc.gaveUp)
			}
			inv, err := acceptedButLost(&Evidence{Ctx: ctx, DB: db, Accepted: d.accepted, Uncommitted: d.uncommitted})
			if err != nil {
				t.Fatal(err)
			}
			if inv.Count != tc.lost {
				t.Errorf("accepted-but-lost = %d %v, want %d", inv.Count, inv.Examples, tc.lost)
			}
		})
	}
}
