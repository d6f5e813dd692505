package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"paygateway/cmd/internal/stack"
	"paygateway/gateway"
	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
)

// backends are the ledgers the ceiling tests run on: SQLite, and MariaDB
// when GATEWAY_TEST_MYSQL_DSN is set (required with CI=true).
var backends = []string{"sqlite", "mysql"}

// openLedger opens a fresh, migrated ledger on backend, as the bench's
// ceiling and gateway use (a SQLite file, or a throwaway MySQL database).
func openLedger(t *testing.T, backend string) (*ledger.Store, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	dsn := filepath.Join(t.TempDir(), "ledger.db")
	if backend == "mysql" {
		dsn = ledgertest.MySQLDSN(t)
	}
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.Migrate(ctx, db, dialect); err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	return ledger.NewStore(db, dialect), sqlDB
}

// rowCounts is every table's row count.
func rowCounts(t *testing.T, db *sql.DB, backend string) map[string]int {
	t.Helper()
	q := "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
	if backend == "mysql" {
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
	}
	rs, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rs.Next() {
		var name string
		if err := rs.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rs.Close()
	out := map[string]int{}
	for _, table := range tables {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	return out
}

// grown is what the rows counted in after added to those in before.
func grown(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for table, n := range after {
		if d := n - before[table]; d != 0 {
			out[table] = d
		}
	}
	return out
}

// orderRows renders table's rows of order no, the order's number replaced
// by "<no>", without the columns that differ by nature (ids, clocks).
func orderRows(t *testing.T, db *sql.DB, table, no string) []string {
	t.Helper()
	rs, err := db.Query("SELECT * FROM "+table+" WHERE out_trade_no = ? ORDER BY id", no)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	cols, _ := rs.Columns()
	var out []string
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var parts []string
		for i, c := range cols {
			switch c {
			case "id", "created_at", "updated_at", "received_at", "create_time", "success_time", "next_run_at":
				continue
			}
			v := vals[i]
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			parts = append(parts, c+"="+strings.ReplaceAll(fmt.Sprint(v), no, "<no>"))
		}
		out = append(out, strings.Join(parts, " "))
	}
	return out
}

// paidUpdate is the update the gateway makes of the bench's notification
// of order no (see newNotification).
func paidUpdate(no string) ledger.TransactionUpdate {
	now := time.Now().UTC()
	return ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS",
			ResourceType: "encrypt-resource", Summary: "支付成功", OutTradeNo: no, TransactionID: "42" + no,
			Plaintext: plaintextFor(no), CreateTime: now},
		OutTradeNo: no, TransactionID: "42" + no, TradeState: "SUCCESS", AppID: "wxapp", MchID: "1900000109",
		PayerOpenID: "o-" + no, AmountTotal: 100, PayerTotal: 100, Currency: "CNY", SuccessTime: now,
	}
}

// TestCeilingWritesWhatTheGatewayWrites: for a new notification the
// ceiling writes the rows the ledger writes, in the same tables, with the
// same values, and no more; alone (one commit each) and grouped (the
// gateway's batch path, ApplyTransactions of several).
func TestCeilingWritesWhatTheGatewayWrites(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			store, db := openLedger(t, backend)
			ctx := context.Background()

			before := rowCounts(t, db, backend)
			gwNos := []string{orderNo("W-", 0), orderNo("W-", 1), orderNo("W-", 2)}
			if _, err := store.ApplyTransaction(ctx, paidUpdate(gwNos[0])); err != nil {
				t.Fatal(err)
			}
			errs, batched := store.ApplyTransactions(ctx, []ledger.TransactionUpdate{paidUpdate(gwNos[1]), paidUpdate(gwNos[2])})
			if errs[0] != nil || errs[1] != nil || !batched {
				t.Fatalf("gateway's batch: %v, batched %v", errs, batched)
			}
			mid := rowCounts(t, db, backend)
			gwGrown := grown(before, mid)

			c := &ceiling{db: db, prefix: "C-"}
			if err := c.op(0); err != nil {
				t.Fatal(err)
			}
			if err := c.write([]int{1, 2}); err != nil {
				t.Fatal(err)
			}
			if got := grown(mid, rowCounts(t, db, backend)); fmt.Sprint(got) != fmt.Sprint(gwGrown) {
				t.Fatalf("rows the ceiling added %v, the gateway %v: want the same tables and counts", got, gwGrown)
			}
			for _, table := range []string{"notifications", "payments", "state_history", "outbox_jobs"} {
				for i, gwNo := range gwNos {
					want, got := orderRows(t, db, table, gwNo), orderRows(t, db, table, orderNo("C-", i))
					if strings.Join(got, "\n") != strings.Join(want, "\n") || len(want) != 1 {
						t.Errorf("%s of notification %d: ceiling wrote\n%s\nthe gateway\n%s", table, i,
							strings.Join(got, "\n"), strings.Join(want, "\n"))
					}
				}
			}
		})
	}
}

// TestGroupedCeilingCommitsAsTheGatewayDoes: with many clients the
// grouped ceiling shares transactions (fewer commits than notifications,
// none above the policy's Max), and writes each notification once.
func TestGroupedCeilingCommitsAsTheGatewayDoes(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			_, db := openLedger(t, backend)
			const n = 400
			c := &ceiling{db: db, prefix: "G-"}
			policy := gateway.BatchPolicy{Workers: 2, Max: 8, Spill: 4}
			r := c.grouped(n, 32, policy)
			if r.N != n || r.Failed != 0 {
				t.Fatalf("%d done, %d failed (%s), want %d and none", r.N, r.Failed, r.FirstErr, n)
			}
			// Sharing depends on timing; 32 clients waiting on 2 workers
			// share far more than a quarter of the time.
			if r.Txns < n/policy.Max || r.Txns > n*3/4 {
				t.Errorf("%d notifications in %d transactions: want them shared, at most %d in one", n, r.Txns, policy.Max)
			}
			for _, table := range []string{"notifications", "payments", "state_history", "outbox_jobs"} {
				var rows, orders int
				q := "SELECT COUNT(*), COUNT(DISTINCT out_trade_no) FROM " + table + " WHERE out_trade_no LIKE 'G-%'"
				if err := db.QueryRow(q).Scan(&rows, &orders); err != nil {
					t.Fatal(err)
				}
				if rows != n || orders != n {
					t.Errorf("%s: %d rows of %d orders, want %d of %d", table, rows, orders, n, n)
				}
			}
		})
	}
}

// TestRatioIsOverTheHigherCeiling: a gateway that only matches what
// group commit saves over one commit per notification does not meet the
// ratio; the grouped ceiling counts, and its failures too.
func TestRatioIsOverTheHigherCeiling(t *testing.T) {
	l := Level{Concurrency: 128, New: at(5000, 0), Ceiling: at(2000, 0), Grouped: at(8000, 0)}
	if got := l.Ratio(); got != 0.625 {
		t.Errorf("ratio %.3f, want 5000/8000 = 0.625 (over the grouped ceiling, not the one-commit 2000)", got)
	}
	if v := ratioVerdict([]Level{l}); !strings.Contains(v, ": NOT met (128 clients 0.62); over one commit per notification alone: 128 clients 2.50") {
		t.Errorf("verdict %q, want NOT met, with the one-commit ratio beside it", v)
	}
	few := Level{Concurrency: 8, New: at(1800, 0), Ceiling: at(2000, 0), Grouped: at(1500, 0)}
	if got := few.Ratio(); got != 0.9 {
		t.Errorf("ratio %.3f, want 1800/2000 = 0.9 (the one-commit ceiling is the higher)", got)
	}
	grouped := at(8000, 0)
	grouped.Failed = 1
	failed := Level{Concurrency: 8, New: at(9000, 0), Ceiling: at(2000, 0), Grouped: grouped}
	if v := ratioVerdict([]Level{failed}); !strings.Contains(v, "NOT met") || !strings.HasSuffix(v, "failed: 1 at 8 clients") {
		t.Errorf("grouped ceiling with a failure: %q, want NOT met naming it", v)
	}
	both := []OpenRun{{Offered: 5000, Result: at(2500, 3*time.Second)}, {Offered: 2000, Result: at(1990, 20*time.Millisecond)}}
	want := "NOT met (p99 3000.0ms at 5000/s offered, 2500/s done); at the one-commit ceiling's rate: p99 20.0ms at 2000/s offered, 1990/s done"
	if v := p99Verdict([]Level{l}, both); !strings.Contains(v, want) {
		t.Errorf("open loops at 5000/s and at the one-commit ceiling: %q, want %q", v, want)
	}
	opens := []OpenRun{{Offered: 2000, Result: at(2000, 10*time.Millisecond)}}
	if v := p99Verdict([]Level{l}, opens); !strings.Contains(v, "offered below the target's rate") {
		t.Errorf("open loop at the one-commit ceiling (2000/s) while the grouped one did 8000/s: %q, want it noted", v)
	}
}

// TestOpenRates: the open loops run at the target's rate or the best
// ceiling if lower, at -rate too if above that, and at the best
// one-commit ceiling's rate when it is lower than the first.
func TestOpenRates(t *testing.T) {
	levels := []Level{{Ceiling: at(1300, 0), Grouped: at(3000, 0)}, {Ceiling: at(1200, 0), Grouped: at(8000, 0)}}
	if got := fmt.Sprint(openRates(5000, levels)); got != "[5000 1300]" {
		t.Errorf("grouped ceiling above -rate: rates %s, want [5000 1300]", got)
	}
	levels[1].Grouped = at(4000, 0)
	if got := fmt.Sprint(openRates(5000, levels)); got != "[4000 5000 1300]" {
		t.Errorf("grouped ceiling below -rate: rates %s, want [4000 5000 1300]", got)
	}
	if got := fmt.Sprint(openRates(1000, levels)); got != "[1000]" {
		t.Errorf("-rate below both ceilings: rates %s, want [1000]", got)
	}
}

// TestBatchPolicyIsTheGateways: the grouped ceiling batches as the
// gateway gwbench starts does: the shipped notify settings, or those
// GWBENCH_GATEWAY_ENV gives the gateway.
func TestBatchPolicyIsTheGateways(t *testing.T) {
	root, err := stack.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "configs", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var shipped struct {
		Notify struct {
			Workers int `yaml:"batch_workers"`
			Max     int `yaml:"batch_max"`
			Spill   int `yaml:"batch_spill"`
		} `yaml:"notify"`
	}
	if err := yaml.Unmarshal(raw, &shipped); err != nil {
		t.Fatal(err)
	}
	want := gateway.BatchPolicy{Workers: shipped.Notify.Workers, Max: shipped.Notify.Max, Spill: shipped.Notify.Spill}
	if defaultBatchPolicy != want {
		t.Errorf("default policy %+v, configs/gateway.yaml's notify %+v", defaultBatchPolicy, want)
	}
	p, err := gatewayBatchPolicy([]string{"GOMAXPROCS=1", "GATEWAY_NOTIFY_BATCH_WORKERS=4", "GATEWAY_NOTIFY_BATCH_SPILL=0"})
	if err != nil || p != (gateway.BatchPolicy{Workers: 4, Max: defaultBatchPolicy.Max, Spill: 0}) {
		t.Errorf("policy %+v (%v), want workers 4, spill 0, the default max", p, err)
	}
	if _, err := gatewayBatchPolicy([]string{"GATEWAY_NOTIFY_BATCH_MAX=lots"}); err == nil {
		t.Error("GATEWAY_NOTIFY_BATCH_MAX=lots accepted")
	}
}

// TestGatewayTransactionsFromMetrics: the gateway's transactions are its
// batched observations, plus one per update of a "single" one (a batch
// that fell back applies each on its own).
func TestGatewayTransactionsFromMetrics(t *testing.T) {
	text := `# HELP gateway_notify_batch_size Notifications per group commit.
# TYPE gateway_notify_batch_size histogram
gateway_notify_batch_size_bucket{mode="batched",le="+Inf"} 10
gateway_notify_batch_size_sum{mode="batched"} 64
gateway_notify_batch_size_count{mode="batched"} 10
gateway_notify_batch_size_bucket{mode="single",le="+Inf"} 7
gateway_notify_batch_size_sum{mode="single"} 12
gateway_notify_batch_size_count{mode="single"} 7
gateway_notifications_total{kind="payment",outcome="success"} 76
`
	if got := parseBatches(text); got != (batchTally{notes: 76, txns: 22}) {
		t.Errorf("tally %+v, want 76 notifications in 10 + 12 transactions", got)
	}
	l := Level{Concurrency: 8, New: Result{N: 76, Txns: 22}, Grouped: Result{N: 80, Failed: 4, Txns: 19}}
	want := "8 clients: gateway 76 notifications in 22 transactions (3.5 each), grouped ceiling 76 in 19 (4.0 each)"
	if got := groupNote([]Level{l}); got != want {
		t.Errorf("note %q, want %q", got, want)
	}
}
