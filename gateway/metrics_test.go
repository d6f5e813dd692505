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

// TestOpenAnomaliesGauge: gateway_anomalies counts every anomaly ever
// flagged (alert on an increase); gateway_anomalies_open only those no
// person has resolved yet.
func TestOpenAnomaliesGauge(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for _, ref := range []string{"payer:gauge-1", "payer:gauge-2"} {
			if err := s.RecordAnomaly(ctx, ledger.Anomaly{Kind: ledger.AnomalyPayerMismatch, Ref: ref, OutTradeNo: "gauge"}); err != nil {
				t.Fatal(err)
			}
		}
		var ids []uint64
		_ = s.EachAnomaly(ctx, ledger.ListQuery{OutTradeNo: "gauge"}, func(a ledger.AnomalyListItem) error {
			ids = append(ids, a.ID)
			return nil
		})
		if len(ids) != 2 {
			t.Fatalf("anomalies %v, want 2", ids)
		}
		if _, err := s.ResolveAnomaly(ctx, ids[0], "ops:test", "dealt with"); err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := s.DB().DB()
		reg := prometheus.NewRegistry()
		reg.MustRegister(newLedgerCollector(sqlDB, s.Now))
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		series := 0
		for _, f := range families {
			for _, m := range f.GetMetric() {
				got[f.GetName()] += m.GetGauge().GetValue()
				if f.GetName() == "gateway_anomalies_open" {
					series++
				}
			}
		}
		if got["gateway_anomalies"] != 2 || got["gateway_anomalies_open"] != 1 || series != 1 {
			t.Fatalf("gauges %v (%d open series), want 2 anomalies, 1 open", got, series)
		}
		if _, err := s.ResolveAnomaly(ctx, ids[1], "ops:test", "dealt with too"); err != nil {
			t.Fatal(err)
		}
		again := prometheus.NewRegistry()
		again.MustRegister(newLedgerCollector(sqlDB, s.Now))
		families, _ = again.Gather()
		zero := false
		for _, f := range families {
			if f.GetName() == "gateway_anomalies_open" && len(f.GetMetric()) == 1 && f.GetMetric()[0].GetGauge().GetValue() == 0 {
				zero = true
			}
		}
		if !zero {
			t.Fatalf("all resolved: gateway_anomalies_open is not 0 (%v)", families)
		}
	})
}
