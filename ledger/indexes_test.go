package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/migrations"
)

// TestDayTotalsUseAnIndex: the totals API runs one query per business day
// and table; each must read one day's rows through an index, not every
// successful payment or refund (a year of totals over 300,000 refunds took
// 30 s on MariaDB without idx_refunds_state_success, 0.6 s with it).
func TestDayTotalsUseAnIndex(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	seedForTotals(t, s, 3000)
	start, _ := ledger.DayStart("2025-02-01")
	for table, want := range map[string]string{"payments": "idx_payments_success_time", "refunds": "idx_refunds_state_success"} {
		assertIndex(t, s, s.DaySumSQL(table, start, start.Add(24*time.Hour)), want)
	}
}

// TestPruneReadsOnlyUnlinkedKeys: the janitor's search for expired
// idempotency keys reads through the index of keys that name no refund;
// the keys that do (kept forever, one per refund) are never scanned.
func TestPruneReadsOnlyUnlinkedKeys(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	past := time.Now().Add(-48 * time.Hour)
	rows := make([]map[string]any, 0, 3000)
	for i := range cap(rows) {
		row := map[string]any{"scope": "o-idx", "idem_key": fmt.Sprintf("k-%d", i), "request_hash": "h",
			"state": "DONE", "created_at": past, "expires_at": past.Add(time.Duration(i) * time.Second)}
		if i%50 != 0 {
			row["resource_key"] = fmt.Sprintf("rf-%d", i)
		}
		rows = append(rows, row)
	}
	if err := s.DB().Table("idempotency_keys").CreateInBatches(rows, 500).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Exec("ANALYZE TABLE idempotency_keys").Error; err != nil {
		t.Fatal(err)
	}
	assertIndex(t, s, s.PruneSQL(), "idx_idempotency_keys_unlinked")
}

// TestFinanceLookupsUseAnIndex: a lookup by one transaction, refund or
// payer reads that key's rows through an index, not every row of the
// table in id order (the lists are keyset pages on id).
func TestFinanceLookupsUseAnIndex(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	seedForTotals(t, s, 3000)
	seedJobs(t, s, 3000)
	cases := []struct {
		list string
		q    ledger.ListQuery
		want string
	}{
		{"notifications", ledger.ListQuery{TransactionID: "tx42"}, "idx_notifications_out_trade_no"},
		{"notifications", ledger.ListQuery{OutRefundNo: "tr42"}, "idx_notifications_out_trade_no"},
		{"refunds", ledger.ListQuery{TransactionID: "tx42"}, "idx_refunds_transaction_id"},
		{"payments", ledger.ListQuery{PayerOpenID: "o42"}, "idx_payments_payer"},
		{"outbox_jobs", ledger.ListQuery{OutRefundNo: "tr41"}, "idx_outbox_jobs_out_refund_no"},
	}
	for _, c := range cases {
		c.q.Limit = 101
		c.q.AfterID = 7
		if c.list == "notifications" {
			q, err := s.NarrowNotices(context.Background(), c.q)
			if err != nil {
				t.Fatal(err)
			}
			c.q = q
		}
		assertIndex(t, s, s.ListSQL(c.list, c.q), c.want)
	}
}

// TestListsFromATimeUseAnIndex: a list from a time (finance's "payments
// since yesterday") reads through the index on its time column, or in id
// order from the first id at or after the time, never through every older
// row: on its first page (or CSV chunk) and on the pages after it.
func TestListsFromATimeUseAnIndex(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	seedForTotals(t, s, 3000)
	seedJobs(t, s, 3000)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	lists := map[string]string{"payments": "idx_payments_created_at", "outbox_jobs": "idx_outbox_jobs_created_at",
		"refunds": "idx_refunds_created_at", "notifications": "idx_notifications_received_at"}
	for list, index := range lists {
		for _, from := range []time.Time{base.Add(50 * 24 * time.Hour), base.Add(99 * 24 * time.Hour)} { // half, last day
			first := ledger.ListQuery{From: from, Limit: 101}
			if sql := s.FirstIDSQL(list, first); sql == "" {
				t.Errorf("%s from a time: no first-id lookup (not timeIndexed)", list)
			} else {
				assertIndex(t, s, sql, index)
			}
			assertBounded(t, s, s.ListSQL(list, first))
			later := first
			later.AfterID = 2990
			assertBounded(t, s, s.ListSQL(list, later))
		}
	}
}

// assertBounded wants MariaDB's plan for query to read every table
// through an index range or lookup (the primary key's included), none
// whole (type ALL or index: a scan in id order from the first row).
func assertBounded(t *testing.T, s *ledger.Store, query string) {
	t.Helper()
	var plan []map[string]any
	if err := s.DB().Raw("EXPLAIN " + query).Scan(&plan).Error; err != nil {
		t.Fatal(err)
	}
	for _, row := range plan {
		if typ := fmt.Sprint(row["type"]); typ == "ALL" || typ == "index" || row["key"] == nil {
			t.Errorf("%s\nplan %v: reads a whole table or index", query, plan)
			return
		}
	}
}

// TestNarrowedNoticeLookupsFindTheSameRows: narrowing a notification
// lookup by transaction or refund to its order changes no answer, also
// when the ledger has no such payment or refund.
func TestNarrowedNoticeLookupsFindTheSameRows(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		seedForTotals(t, s, 50)
		// A notification whose transaction no payment has (an anomaly).
		if err := s.DB().Exec(`INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no,
			transaction_id, plaintext, received_at) VALUES ('n-odd', 'callback', 'TRANSACTION.SUCCESS', 'encrypt-resource',
			'tp7', 'tx-odd', '{}', ?)`, time.Now()).Error; err != nil {
			t.Fatal(err)
		}
		for _, q := range []ledger.ListQuery{{TransactionID: "tx7"}, {OutRefundNo: "tr7"}, {TransactionID: "tx-odd"},
			{TransactionID: "tx-none"}, {TransactionID: "tx7", OutTradeNo: "tp8"}} {
			var got []string
			err := s.EachNotice(context.Background(), q, func(n ledger.NoticeListItem) error {
				got = append(got, n.NotifyID)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			if err := s.DB().Table("notifications").Where("(? = '' OR transaction_id = ?) AND (? = '' OR out_refund_no = ?) AND (? = '' OR out_trade_no = ?)",
				q.TransactionID, q.TransactionID, q.OutRefundNo, q.OutRefundNo, q.OutTradeNo, q.OutTradeNo).
				Order("id").Pluck("notify_id", &want).Error; err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%+v: got %v, want %v", q, got, want)
			}
		}
	})
}

// seedJobs inserts n outbox jobs, one every 48 minutes from 2025-01-01
// like seedForTotals: a confirmation of order tp<i>, and for odd i a
// release for refund tr<i>.
func seedJobs(t *testing.T, s *ledger.Store, n int) {
	t.Helper()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := make([]map[string]any, 0, n)
	for i := range n {
		at := base.Add(time.Duration(i) * 48 * time.Minute)
		row := map[string]any{"kind": ledger.JobConfirmInventory, "job_key": fmt.Sprintf("confirm:tp%d", i),
			"out_trade_no": fmt.Sprintf("tp%d", i), "payload": "{}", "state": ledger.JobDone, "next_run_at": at,
			"out_refund_no": nil, "created_at": at, "updated_at": at}
		if i%2 == 1 {
			row["kind"], row["job_key"], row["out_refund_no"] = ledger.JobReleaseInventory, fmt.Sprintf("release:tr%d", i), fmt.Sprintf("tr%d", i)
		}
		rows = append(rows, row)
	}
	if err := s.DB().Table("outbox_jobs").CreateInBatches(rows, 500).Error; err != nil {
		t.Fatal(err)
	}
	if s.Dialect() == migrations.MySQL {
		if err := s.DB().Exec("ANALYZE TABLE outbox_jobs").Error; err != nil {
			t.Fatal(err)
		}
	}
}

// assertIndex wants MariaDB's plan for query to read one table through
// the index want.
func assertIndex(t *testing.T, s *ledger.Store, query, want string) {
	t.Helper()
	var plan []map[string]any
	if err := s.DB().Raw("EXPLAIN " + query).Scan(&plan).Error; err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || fmt.Sprint(plan[0]["key"]) != want {
		t.Errorf("%s\nplan %v, want key %s", query, plan, want)
	}
}

// seedForTotals inserts n successful payments, each with a payment
// notification, and n refunds, each with a refund notification, one every
// 48 minutes from 2025-01-01 (100 days for 3,000).
func seedForTotals(t *testing.T, s *ledger.Store, n int) {
	t.Helper()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var pay, ref, note []string
	var pargs, rargs, nargs []any
	for i := range n {
		at := base.Add(time.Duration(i) * 48 * time.Minute)
		no, tx, rno := fmt.Sprintf("tp%d", i), fmt.Sprintf("tx%d", i), fmt.Sprintf("tr%d", i)
		pay = append(pay, "(?,?,?,?,?,?,?,?,?)")
		pargs = append(pargs, no, tx, "SUCCESS", 100, "CNY", fmt.Sprintf("o%d", i), at, at, at)
		ref = append(ref, "(?,?,?,?,?,?,?,?,?,?)")
		rargs = append(rargs, rno, no, tx, "SUCCESS", 10, 100, "u", at, at, at)
		note = append(note, "(?,'callback','TRANSACTION.SUCCESS','encrypt-resource',?,?,NULL,'{}',?)",
			"(?,'callback','REFUND.SUCCESS','encrypt-resource',?,?,?,'{}',?)")
		nargs = append(nargs, "n"+no, no, tx, at, "n"+rno, no, tx, rno, at)
	}
	stmts := []struct {
		sql  string
		args []any
	}{
		{"INSERT INTO payments (out_trade_no, transaction_id, state, amount_total, currency, payer_openid, success_time, created_at, updated_at) VALUES " +
			strings.Join(pay, ","), pargs},
		{"INSERT INTO refunds (out_refund_no, out_trade_no, transaction_id, state, amount, total, requester, success_time, created_at, updated_at) VALUES " +
			strings.Join(ref, ","), rargs},
		{"INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no, transaction_id, out_refund_no, plaintext, received_at) VALUES " +
			strings.Join(note, ","), nargs},
	}
	for _, st := range stmts {
		if err := s.DB().Exec(st.sql, st.args...).Error; err != nil {
			t.Fatal(err)
		}
	}
	if s.Dialect() == migrations.MySQL {
		if err := s.DB().Exec("ANALYZE TABLE payments, refunds, notifications").Error; err != nil {
			t.Fatal(err)
		}
	}
}

// TestListsFromATimeFindTheSameRows: a list from a time starts its id
// scan at the first id at or after it (payments, refunds, notifications,
// outbox jobs, audit log); the rows are exactly those a plain time filter
// finds, pages and other filters included.
func TestListsFromATimeFindTheSameRows(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		seedForTotals(t, s, 60)
		seedJobs(t, s, 60)
		base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := range 60 {
			at := base.Add(time.Duration(i) * 48 * time.Minute)
			if err := s.DB().Exec(`INSERT INTO audit_log (principal, role, method, path, created_at) VALUES (?, 'ops', 'GET', '/x', ?)`,
				fmt.Sprintf("p%d", i%3), at).Error; err != nil {
				t.Fatal(err)
			}
		}
		for _, q := range []ledger.ListQuery{
			{From: base.Add(10 * time.Hour)},
			{From: base.Add(10 * time.Hour), To: base.Add(30 * time.Hour)},
			{From: base.Add(10*time.Hour + time.Minute), Limit: 5, AfterID: 20},
			{From: base.Add(1000 * time.Hour)}, // after every row
			{From: base.Add(-time.Hour)},       // before every row
		} {
			checkSameRows(t, s, "payments", "created_at", q, func(fn func(uint64)) error {
				return s.EachPayment(context.Background(), q, func(p ledger.PaymentListItem) error { fn(p.ID); return nil })
			})
			checkSameRows(t, s, "outbox_jobs", "created_at", q, func(fn func(uint64)) error {
				return s.EachOutboxJob(context.Background(), q, func(j ledger.OutboxJobListItem) error { fn(j.ID); return nil })
			})
			checkSameRows(t, s, "refunds", "created_at", q, func(fn func(uint64)) error {
				return s.EachRefund(context.Background(), q, func(r ledger.RefundListItem) error { fn(r.ID); return nil })
			})
			checkSameRows(t, s, "notifications", "received_at", q, func(fn func(uint64)) error {
				return s.EachNotice(context.Background(), q, func(n ledger.NoticeListItem) error { fn(n.ID); return nil })
			})
			aq := q
			aq.Principal = "p1"
			checkSameRows(t, s, "audit_log", "created_at", aq, func(fn func(uint64)) error {
				return s.EachAudit(context.Background(), aq, func(e ledger.AuditEntry) error { fn(e.ID); return nil })
			})
		}
	})
}

func checkSameRows(t *testing.T, s *ledger.Store, table, timeCol string, q ledger.ListQuery, list func(func(uint64)) error) {
	t.Helper()
	var got []uint64
	if err := list(func(id uint64) { got = append(got, id) }); err != nil {
		t.Fatal(err)
	}
	tx := s.DB().Table(table).Where(timeCol+" >= ? AND id > ?", q.From, q.AfterID)
	if !q.To.IsZero() {
		tx = tx.Where(timeCol+" < ?", q.To)
	}
	if q.Principal != "" {
		tx = tx.Where("principal = ?", q.Principal)
	}
	if q.Limit > 0 {
		tx = tx.Limit(q.Limit)
	}
	var want []uint64
	if err := tx.Order("id").Pluck("id", &want).Error; err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s %+v: got %v, want %v", table, q, got, want)
	}
}
