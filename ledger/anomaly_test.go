package ledger_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestResolvedAnomalyStaysResolved: a person resolves an anomaly once,
// with a note; resolving it again is refused and keeps the first note;
// the same fact seen again (the daily re-check of a mismatched payment)
// raises its count but does not reopen it. The resolution has its one
// history row, with who resolved it. An unknown id is not found.
func TestResolvedAnomalyStaysResolved(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		flag := ledger.Anomaly{Kind: ledger.AnomalyAmountMismatch, Ref: "paid:tx-res-1", OutTradeNo: "res-1", Detail: "paid 999"}
		if err := s.RecordAnomaly(ctx, flag); err != nil {
			t.Fatal(err)
		}
		var id uint64
		_ = s.EachAnomaly(ctx, ledger.ListQuery{OutTradeNo: "res-1", State: ledger.AnomalyOpen}, func(a ledger.AnomalyListItem) error {
			id = a.ID
			return nil
		})
		if id == 0 {
			t.Fatal("the new anomaly is not listed as OPEN")
		}
		a, err := s.ResolveAnomaly(ctx, id, "finance:alice", "refunded the difference")
		if err != nil || a.State != ledger.AnomalyResolved || a.ResolvedAt == nil || a.ResolvedBy != "finance:alice" {
			t.Fatalf("resolve: %+v, %v", a, err)
		}
		if again, err := s.ResolveAnomaly(ctx, id, "ops:bob", "other note"); !errors.Is(err, ledger.ErrConflict) ||
			again.Resolution != "refunded the difference" {
			t.Fatalf("second resolve: %+v, %v; want ErrConflict and the first note", again, err)
		}
		if err := s.RecordAnomaly(ctx, flag); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Anomalies(ctx, "res-1")
		if len(got) != 1 || got[0].State != ledger.AnomalyResolved || got[0].SeenCount != 2 {
			t.Fatalf("after the fact is seen again: %+v, want one RESOLVED anomaly seen twice", got)
		}
		h, err := s.History(ctx, "res-1")
		if err != nil || len(h) != 1 || h[0].Entity != ledger.EntityAnomaly || h[0].From != ledger.AnomalyOpen ||
			h[0].To != ledger.AnomalyResolved || h[0].Ref != "finance:alice" || h[0].EntityKey != strconv.FormatUint(id, 10) {
			t.Fatalf("history: %+v, %v; want the one resolution, by finance:alice", h, err)
		}
		if _, err := s.ResolveAnomaly(ctx, id+1000, "ops:bob", "x"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("unknown id: %v, want ErrNotFound", err)
		}
	})
}
