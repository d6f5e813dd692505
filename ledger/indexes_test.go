package ledger_test

import (
	"context"
	"errors"
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

// TestNoticeOrderLookupsUseAnIndex: each read that finds the order of a
// notification lookup by transaction or refund is one indexed read, also
// for a transaction only a refund names and for a refund the gateway never
// made (its UNKNOWN_REFUND flag); the narrowed lookup then reads the
// notifications' out_trade_no index.
func TestNoticeOrderLookupsUseAnIndex(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	seedForTotals(t, s, 3000)
	seedOrphans(t, s)
	for i := range 300 { // flags of other refunds, so that the plan is not a guess on an empty table
		if err := s.RecordAnomaly(context.Background(), ledger.Anomaly{Kind: ledger.AnomalyUnknownRefund,
			Ref: fmt.Sprintf("out-x%d:SUCCESS", i), OutTradeNo: fmt.Sprintf("x%d", i), Detail: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DB().Exec("ANALYZE TABLE payments, refunds, anomalies").Error; err != nil {
		t.Fatal(err)
	}
	reads := []string{"uk_payments_transaction_id", "idx_refunds_transaction_id"}
	for _, c := range []struct {
		q     ledger.ListQuery
		reads []string
	}{
		{ledger.ListQuery{TransactionID: "tx42"}, reads[:1]},
		{ledger.ListQuery{TransactionID: "tx-rf-only"}, reads},
		{ledger.ListQuery{OutRefundNo: "out-rf1"}, []string{"uk_refunds_out_refund_no", "uk_anomalies_kind_ref"}},
	} {
		for i, sql := range s.NoticeOrderSQL(c.q) {
			if i < len(c.reads) { // the reads after the one that finds the order are not made
				assertKeyRead(t, s, sql, c.reads[i])
			}
		}
		q, err := s.NarrowNotices(context.Background(), c.q)
		if err != nil || q.OutTradeNo == "" {
			t.Fatalf("%+v: narrowed to %+v (%v), want an order", c.q, q, err)
		}
		q.Limit = 101
		assertIndex(t, s, s.ListSQL("notifications", q), "idx_notifications_out_trade_no")
	}
}

// assertKeyRead is assertIndex for a lookup by a unique key, which MariaDB
// answers while planning when no row has the key: an index read whose
// plan names no key.
func assertKeyRead(t *testing.T, s *ledger.Store, query, want string) {
	t.Helper()
	var plan []map[string]any
	if err := s.DB().Raw("EXPLAIN " + query).Scan(&plan).Error; err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(want, "uk_") && len(plan) == 1 && plan[0]["Extra"] == "Impossible WHERE noticed after reading const tables" {
		return
	}
	assertIndex(t, s, query, want)
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
// lookup by transaction or refund to its order changes no answer. A
// lookup nothing narrows (no payment, refund or flag has the key), or one
// by source, is refused without from or an order; with from it finds the
// same rows as a plain filter.
func TestNarrowedNoticeLookupsFindTheSameRows(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		seedForTotals(t, s, 50)
		seedOrphans(t, s)
		// A notification whose transaction no payment has (an anomaly).
		if err := s.DB().Exec(`INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no,
			transaction_id, plaintext, received_at) VALUES ('n-odd', 'callback', 'TRANSACTION.SUCCESS', 'encrypt-resource',
			'tp7', 'tx-odd', '{}', ?)`, time.Now()).Error; err != nil {
			t.Fatal(err)
		}
		// A second payment of order tp7, flagged, and its notice: the payment
		// row holds the first transaction only.
		ctx := context.Background()
		if err := s.RecordAnomaly(ctx, ledger.Anomaly{Kind: ledger.AnomalyDuplicatePayment, Ref: "tx-dup", OutTradeNo: "tp7"}); err != nil {
			t.Fatal(err)
		}
		if err := s.DB().Exec(`INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no,
			transaction_id, plaintext, received_at) VALUES ('n-dup', 'callback', 'TRANSACTION.SUCCESS', 'encrypt-resource',
			'tp7', 'tx-dup', '{}', ?)`, time.Now()).Error; err != nil {
			t.Fatal(err)
		}
		since, seeded := time.Now().Add(-time.Hour), time.Date(2025, 1, 1, 20, 0, 0, 0, time.UTC)
		for _, c := range []struct {
			q       ledger.ListQuery
			refused bool
		}{
			{q: ledger.ListQuery{TransactionID: "tx7"}}, {q: ledger.ListQuery{OutRefundNo: "tr7"}},
			{q: ledger.ListQuery{TransactionID: "tx7", OutTradeNo: "tp8"}}, {q: ledger.ListQuery{TransactionID: "tx7", Source: "callback"}},
			{q: ledger.ListQuery{TransactionID: "tx-rf-only"}}, {q: ledger.ListQuery{OutRefundNo: "out-rf1"}},
			{q: ledger.ListQuery{TransactionID: "tx-odd"}, refused: true}, {q: ledger.ListQuery{TransactionID: "tx-odd", From: since}},
			{q: ledger.ListQuery{TransactionID: "tx-dup"}},
			{q: ledger.ListQuery{TransactionID: "tx-tp-rf1"}, refused: true}, {q: ledger.ListQuery{TransactionID: "tx-tp-rf1", From: since}},
			{q: ledger.ListQuery{TransactionID: "tx-none"}, refused: true}, {q: ledger.ListQuery{TransactionID: "tx-none", From: since}},
			{q: ledger.ListQuery{OutRefundNo: "tr-none"}, refused: true}, {q: ledger.ListQuery{OutRefundNo: "tr-none", OutTradeNo: "tp7"}},
			{q: ledger.ListQuery{Source: "callback"}, refused: true}, {q: ledger.ListQuery{Source: "callback", To: since}, refused: true},
			{q: ledger.ListQuery{Source: "callback", From: seeded}}, {q: ledger.ListQuery{Source: "query", From: seeded}},
		} {
			got, err := noticeIDs(s, c.q)
			var unindexed *ledger.UnindexedFilterError
			if refused := errors.As(err, &unindexed); refused != c.refused || (err != nil && !refused) {
				t.Errorf("%+v: err %v, want refused %v", c.q, err, c.refused)
				continue
			}
			if want := plainNotices(t, s, c.q); !c.refused && fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%+v: got %v, want %v", c.q, got, want)
			}
		}
	})
}

// noticeIDs lists the ids EachNotice finds for q.
func noticeIDs(s *ledger.Store, q ledger.ListQuery) ([]uint64, error) {
	var ids []uint64
	err := s.EachNotice(context.Background(), q, func(n ledger.NoticeListItem) error {
		ids = append(ids, n.ID)
		return nil
	})
	return ids, err
}

// plainNotices lists the ids of the notifications matching q's filters
// as written, without narrowing.
func plainNotices(t *testing.T, s *ledger.Store, q ledger.ListQuery) []uint64 {
	t.Helper()
	tx := s.DB().Table("notifications")
	for col, v := range map[string]string{"transaction_id": q.TransactionID, "out_refund_no": q.OutRefundNo,
		"out_trade_no": q.OutTradeNo, "source": q.Source} {
		if v != "" {
			tx = tx.Where(col+" = ?", v)
		}
	}
	if !q.From.IsZero() {
		tx = tx.Where("received_at >= ?", q.From)
	}
	if !q.To.IsZero() {
		tx = tx.Where("received_at < ?", q.To)
	}
	var ids []uint64
	if err := tx.Order("id").Pluck("id", &ids).Error; err != nil {
		t.Fatal(err)
	}
	return ids
}

// seedOrphans stores notifications whose keys the payments table does not
// give: a refund the gateway never made (order tp-rf1, transaction
// tx-tp-rf1, refund out-rf1; flagged UNKNOWN_REFUND), and a refund of tp3
// naming a transaction tx-rf-only that the payment row does not carry.
func seedOrphans(t *testing.T, s *ledger.Store) {
	t.Helper()
	reportRefundFirst(t, s, rfRefundNotice("tp-rf1", "out-rf1", ledger.RefundSuccess))
	now := time.Now()
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO refunds (out_refund_no, out_trade_no, transaction_id, state, amount, total, requester, created_at, updated_at)
			VALUES ('rf-only', 'tp3', 'tx-rf-only', 'PROCESSING', 10, 100, 'u', ?, ?)`, []any{now, now}},
		{`INSERT INTO notifications (notify_id, source, event_type, resource_type, out_trade_no, transaction_id, out_refund_no,
			plaintext, received_at) VALUES ('n-rf-only', 'query', 'REFUND.PROCESSING', 'encrypt-resource', 'tp3', 'tx-rf-only',
			'rf-only', '{}', ?)`, []any{now}},
	} {
		if err := s.DB().Exec(st.sql, st.args...).Error; err != nil {
			t.Fatal(err)
		}
	}
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
