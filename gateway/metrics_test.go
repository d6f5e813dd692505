package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestDueLagLeavesHeldReleasesOut: a release waiting for its order's
// confirmation is not due to any worker, so it does not count as backlog;
// the confirmation it waits for does.
func TestDueLagLeavesHeldReleasesOut(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidBy(t, s, "lag-1", "o-lag")
		if _, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: "lag-1", OutRefundNo: "rf-lag", Amount: 10,
			Requester: "o-lag", CheckAt: s.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-lag", State: ledger.RefundSuccess,
			Source: ledger.SourceQuery}); err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := s.DB().DB()
		later := func() time.Time { return s.Now().Add(time.Minute) }
		reg := prometheus.NewRegistry()
		reg.MustRegister(newLedgerCollector(sqlDB, later))
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, f := range families {
			if f.GetName() != "gateway_outbox_due_lag_seconds" {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					kinds = append(kinds, l.GetValue())
				}
			}
		}
		if strings.Join(kinds, ",") != ledger.JobConfirmInventory {
			t.Fatalf("due lag for %v, want the confirmation only, not the release held behind it", kinds)
		}
	})
}
