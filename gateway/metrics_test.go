package gateway

import (
	"context"
	"database/sql"
	"fmt"
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
		values := ledgerGauges(t, sqlDB, s.Now)
		payer := ledger.AnomalyPayerMismatch
		if values["gateway_anomalies{"+payer+"}"] != 2 || values["gateway_anomalies_open{"+payer+"}"] != 1 {
			t.Fatalf("gauges %v, want 2 anomalies, 1 open", values)
		}
		if _, err := s.ResolveAnomaly(ctx, ids[1], "ops:test", "dealt with too"); err != nil {
			t.Fatal(err)
		}
		values = ledgerGauges(t, sqlDB, s.Now)
		if v, ok := values["gateway_anomalies_open{"+payer+"}"]; !ok || v != 0 {
			t.Fatalf("all resolved: gateway_anomalies_open is not 0 (%v)", values)
		}
	})
}

// TestLedgerGaugesStartAtZero: on an empty ledger every known series is
// there at 0 (each open refund state, outbox kind and state, anomaly
// kind, reconciliation status), so the first anomaly of a kind or a dead
// letter after the last was replayed shows as an increase, not a new
// series. A reconciled day counts by its report's status.
func TestLedgerGaugesStartAtZero(t *testing.T) {
	s := ledgertest.OpenSQLite(t)
	sqlDB, _ := s.DB().DB()
	values := ledgerGauges(t, sqlDB, s.Now)
	want := []string{"gateway_refunds{ABNORMAL}", "gateway_refunds{UNKNOWN}",
		"gateway_outbox_jobs{" + ledger.JobConfirmInventory + "," + ledger.JobDead + "}",
		"gateway_outbox_jobs{" + ledger.JobReleaseInventory + "," + ledger.JobPending + "}",
		"gateway_anomalies{" + ledger.AnomalyDuplicatePayment + "}", "gateway_anomalies_open{" + ledger.AnomalyLateRefundSuccess + "}",
		"gateway_reconciliation_days{" + ledger.ReconcileUnreadable + "}"}
	for _, k := range want {
		if v, ok := values[k]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", k, v, ok)
		}
	}
	if n, want := len(values), 4+2*3+2*len(ledger.AnomalyKinds)+5+1; n != want {
		t.Errorf("%d series on an empty ledger, want %d: %v", n, want, values)
	}
	// A day whose bill the parser refused stays counted, whenever it was.
	now := time.Now().UTC()
	if err := s.DB().Exec(`INSERT INTO reconciliations (bill_date, status, created_at, updated_at) VALUES
		('2020-01-01', ?, ?, ?), ('2020-01-02', ?, ?, ?)`, ledger.ReconcileUnreadable, now, now,
		ledger.ReconcileMatched, now, now).Error; err != nil {
		t.Fatal(err)
	}
	values = ledgerGauges(t, sqlDB, s.Now)
	for _, st := range []string{ledger.ReconcileUnreadable, ledger.ReconcileMatched} {
		if v := values["gateway_reconciliation_days{"+st+"}"]; v != 1 {
			t.Errorf("gateway_reconciliation_days{%s} = %v, want 1", st, v)
		}
	}
}

// TestOldestRefundAgeGaugeIsTheOldest: per unfinished state (UNKNOWN and
// ABNORMAL too) the age is that of its oldest refund, of two requested
// half an hour apart, counted from the request, not from the move into
// the state; a finished refund (SUCCESS, CLOSED, FAILED) gives no series.
// Now catches the query reading the newest refund (MAX), updated_at,
// leaving UNKNOWN or ABNORMAL out, or reading finished states: each an
// alert on a stuck refund firing late, never, or forever.
func TestOldestRefundAgeGaugeIsTheOldest(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		t0 := s.Now()
		at := func(d time.Duration) *ledger.Store { return s.WithClock(func() time.Time { return t0.Add(d) }) }
		refund := func(no string, st ledger.RefundState, requested time.Duration) {
			paidBy(t, s, no, "o-"+no)
			if _, err := at(requested).CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: no, OutRefundNo: "rf-" + no,
				Amount: 10, Requester: "o-" + no, CheckAt: t0.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if st == ledger.RefundCreated {
				return
			}
			if _, err := at(50*time.Minute).ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-" + no, State: st,
				Source: ledger.SourceQuery}); err != nil {
				t.Fatalf("%s to %s: %v", no, st, err)
			}
		}
		open := []ledger.RefundState{ledger.RefundCreated, ledger.RefundProcessing, ledger.RefundUnknown, ledger.RefundAbnormal}
		for i, st := range open {
			refund(fmt.Sprintf("old-%d", i), st, 0)
			refund(fmt.Sprintf("new-%d", i), st, 30*time.Minute)
		}
		for i, st := range []ledger.RefundState{ledger.RefundSuccess, ledger.RefundClosed, ledger.RefundFailed} {
			refund(fmt.Sprintf("done-%d", i), st, 0)
		}
		sqlDB, _ := s.DB().DB()
		ages, counts := map[string]float64{}, map[string]float64{}
		for k, v := range ledgerGauges(t, sqlDB, func() time.Time { return t0.Add(2 * time.Hour) }) {
			switch {
			case strings.HasPrefix(k, "gateway_refunds_oldest_age_seconds{"):
				ages[k] = v
			case strings.HasPrefix(k, "gateway_refunds{"):
				counts[k] = v
			}
		}
		// The count beside it: two in each unfinished state, finished ones
		// not counted at all.
		for _, st := range open {
			if v := counts["gateway_refunds{"+string(st)+"}"]; v != 2 {
				t.Errorf("gateway_refunds{%s} = %v, want 2", st, v)
			}
		}
		if len(counts) != len(open) {
			t.Errorf("refund counts %v, want one per unfinished state only", counts)
		}
		for _, st := range open {
			if v, ok := ages["gateway_refunds_oldest_age_seconds{"+string(st)+"}"]; !ok || v < 7190 || v > 7210 {
				t.Errorf("%s: oldest age %v (present %v), want 7200 s: the oldest refund's, since its request", st, v, ok)
			}
		}
		if len(ages) != len(open) {
			t.Errorf("series %v, want one per unfinished state only", ages)
		}
	})
}

// ledgerGauges gathers the ledger collector's gauges once, keyed by
// name{label values}.
func ledgerGauges(t *testing.T, db *sql.DB, now func() time.Time) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newLedgerCollector(db, now))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			key := f.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			out[key] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestOldestRefundAgeGauge: gateway_refunds_oldest_age_seconds gives, per
// unfinished state, how long ago its oldest refund was requested, and no
// series once none is in that state: a stuck refund shows by its age,
// which a count kept up by steady traffic cannot.
func TestOldestRefundAgeGauge(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidBy(t, s, "age-1", "o-age")
		if _, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: "age-1", OutRefundNo: "rf-age", Amount: 10,
			Requester: "o-age", CheckAt: s.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := s.DB().DB()
		later := func() time.Time { return s.Now().Add(time.Hour) }
		age := func(state ledger.RefundState) (float64, bool) {
			v, ok := ledgerGauges(t, sqlDB, later)["gateway_refunds_oldest_age_seconds{"+string(state)+"}"]
			return v, ok
		}
		for _, st := range []ledger.RefundState{ledger.RefundCreated, ledger.RefundProcessing} {
			if st != ledger.RefundCreated {
				if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-age", State: st,
					Source: ledger.SourceQuery}); err != nil {
					t.Fatal(err)
				}
			}
			if v, ok := age(st); !ok || v < 3590 || v > 3610 {
				t.Fatalf("%s: oldest age %v (present %v), want about an hour", st, v, ok)
			}
		}
		if _, ok := age(ledger.RefundCreated); ok {
			t.Fatal("no refund is CREATED any more, yet its age is still shown")
		}
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: "rf-age", State: ledger.RefundSuccess,
			Source: ledger.SourceQuery}); err != nil {
			t.Fatal(err)
		}
		if v, ok := age(ledger.RefundProcessing); ok {
			t.Fatalf("the refund succeeded, yet a PROCESSING age %v is shown", v)
		}
	})
}

// TestPreviousKeyCountersStartAtZero: the counters an operator watches go
// flat before removing a previous key are there at 0 from the start, per
// notification kind. Now catches their series made only at the first
// count: rate() and increase() cannot see a series' first sample, so an
// instance's single notification under the previous APIv3 key would look
// flat and the key be removed while still in use.
func TestPreviousKeyCountersStartAtZero(t *testing.T) {
	families, err := NewMetrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetValue() + "}"
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	for _, k := range []string{"gateway_jwt_previous_key_accepted_total", "gateway_notifications_previous_apiv3_key_total{payment}",
		"gateway_notifications_previous_apiv3_key_total{refund}"} {
		if v, ok := got[k]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", k, v, ok)
		}
	}
}
