package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestPagesFromATimeNeitherSkipNorRepeat: walking a list from a time in
// small pages, each after the last id of the one before (as the API's
// cursors and CSV chunks do), yields every matching row once, in id
// order, also when rows were recorded out of time order: a first page
// starts at the first id at or after the time, and a row with a later id
// but an earlier time is still found or left out by its time.
func TestPagesFromATimeNeitherSkipNorRepeat(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		seedForTotals(t, s, 60)
		seedJobs(t, s, 60)
		seedLate(t, s, base)
		lists := []struct {
			name, timeCol string
			each          func(ledger.ListQuery, func(uint64)) error
		}{
			{"payments", "created_at", func(q ledger.ListQuery, fn func(uint64)) error {
				return s.EachPayment(ctx, q, func(p ledger.PaymentListItem) error { fn(p.ID); return nil })
			}},
			{"outbox_jobs", "created_at", func(q ledger.ListQuery, fn func(uint64)) error {
				return s.EachOutboxJob(ctx, q, func(j ledger.OutboxJobListItem) error { fn(j.ID); return nil })
			}},
			{"refunds", "created_at", func(q ledger.ListQuery, fn func(uint64)) error {
				return s.EachRefund(ctx, q, func(r ledger.RefundListItem) error { fn(r.ID); return nil })
			}},
			{"notifications", "received_at", func(q ledger.ListQuery, fn func(uint64)) error {
				return s.EachNotice(ctx, q, func(n ledger.NoticeListItem) error { fn(n.ID); return nil })
			}},
		}
		for _, l := range lists {
			for _, from := range []time.Time{base.Add(-time.Hour), base.Add(10 * time.Hour), base.Add(30 * time.Hour),
				base.Add(1000 * time.Hour)} {
				var got []uint64
				q := ledger.ListQuery{From: from, Limit: 7}
				for n := q.Limit; n == q.Limit; {
					n = 0
					err := l.each(q, func(id uint64) { got, n, q.AfterID = append(got, id), n+1, id })
					if err != nil {
						t.Fatal(err)
					}
				}
				var want []uint64
				if err := s.DB().Table(l.name).Where(l.timeCol+" >= ?", from).Order("id").Pluck("id", &want).Error; err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s from %v: pages gave %v, want %v", l.name, from, got, want)
				}
			}
		}
	})
}

// seedLate adds a payment, a refund, a notification and a job after the
// seeded ones, dated 5 h and 20 h after base: the highest ids, with times
// among the first rows'.
func seedLate(t *testing.T, s *ledger.Store, base time.Time) {
	t.Helper()
	for i, at := range []time.Time{base.Add(5 * time.Hour), base.Add(20 * time.Hour)} {
		no := fmt.Sprintf("late%d", i)
		for _, st := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO payments (out_trade_no, state, currency, created_at, updated_at) VALUES (?, 'EXPECTED', 'CNY', ?, ?)`,
				[]any{no, at, at}},
			{`INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total, requester, created_at, updated_at)
				VALUES (?, ?, 'PROCESSING', 10, 100, 'u', ?, ?)`, []any{"r" + no, no, at, at}},
			{`INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no, plaintext, received_at)
				VALUES (?, 'reconcile', 'TRANSACTION.SUCCESS', 'encrypt-resource', ?, '{}', ?)`, []any{"n" + no, no, at}},
			{`INSERT INTO outbox_jobs (kind, job_key, out_trade_no, payload, state, next_run_at, created_at, updated_at)
				VALUES (?, ?, ?, '{}', 'DONE', ?, ?, ?)`, []any{ledger.JobConfirmInventory, "confirm:" + no, no, at, at, at}},
		} {
			if err := s.DB().Exec(st.sql, st.args...).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestListFiltersAreBoundParameters: a filter's value is data, never
// SQL. The gateway refuses such values before they get here; the ledger
// must not depend on it: a quote in a filter finds no row, and spreads
// no condition to the others.
func TestListFiltersAreBoundParameters(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("inj-n1", "inj-o1", "inj-tx1", 100)); err != nil {
			t.Fatal(err)
		}
		for _, q := range []ledger.ListQuery{
			{OutTradeNo: "x' OR '1'='1"}, {State: "x' OR '1'='1"}, {TransactionID: "x' OR 'a'='a"},
			{PayerOpenID: "' OR 1=1 OR 'x'='"},
		} {
			n := 0
			err := s.EachPayment(ctx, q, func(ledger.PaymentListItem) error { n++; return nil })
			if err != nil || n != 0 {
				t.Errorf("payments %+v: %d rows, err %v; want none", q, n, err)
			}
		}
	})
}
