package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/daytest"
	"paygateway/ledger/ledgerdb"
)

// getRaw does a GET with an API key and returns status, body and headers.
func getRaw(t *testing.T, u, key, accept string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", u, err)
	}
	return resp.StatusCode, body, resp.Header
}

type page struct {
	Items []struct {
		ID         uint64 `json:"id"`
		OutTradeNo string `json:"out_trade_no"`
		State      string `json:"state"`
	} `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func getPage(t *testing.T, u string) page {
	t.Helper()
	return getJSON[page](t, u, financeKey)
}

// getJSON GETs u with key, wants 200 and decodes the body into a T.
func getJSON[T any](t *testing.T, u, key string) T {
	t.Helper()
	status, body, _ := getRaw(t, u, key, "")
	if status != 200 {
		t.Fatalf("GET %s: status=%d body=%s", u, status, body)
	}
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", u, err)
	}
	return v
}

// seedPayments inserts n payments straight into the table, in batches:
// every third one CLOSED, the rest SUCCESS.
func seedPayments(t *testing.T, m *Main, prefix string, n int) {
	t.Helper()
	now := time.Now().UTC()
	for start := 0; start < n; start += 500 {
		var sb strings.Builder
		var args []any
		sb.WriteString("INSERT INTO payments (out_trade_no, transaction_id, state, amount_total, payer_openid, currency, success_time, created_at, updated_at) VALUES ")
		for i := start; i < min(start+500, n); i++ {
			if i > start {
				sb.WriteString(",")
			}
			sb.WriteString("(?,?,?,?,?,?,?,?,?)")
			state, tx := "SUCCESS", any(fmt.Sprintf("42%s%06d", prefix, i))
			if i%3 == 0 {
				state, tx = "CLOSED", nil
			}
			args = append(args, fmt.Sprintf("%s%06d", prefix, i), tx, state, 100+i, "openid-"+prefix, "CNY",
				now, now.Add(time.Duration(i)*time.Microsecond), now)
		}
		if err := m.Store.DB().Exec(sb.String(), args...).Error; err != nil {
			t.Fatalf("seed payments: %v", err)
		}
	}
}

// TestLedgerPaginationOver10000Rows walks every page of 10,000 payments
// (filtered and not) while other payments are inserted concurrently: each
// seeded row appears exactly once.
func TestLedgerPaginationOver10000Rows(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			// SQLite (pure Go, slow under -race) gets a tenth of the rows.
			rows := 10_000
			if !b.mysql {
				rows = 1_000
			}
			seedPayments(t, m, "pg", rows)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var inserted atomic.Int64
			wg.Add(1)
			go func() { // concurrent writer
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					now := time.Now().UTC()
					err := m.Store.DB().Exec("INSERT INTO payments (out_trade_no, state, currency, created_at, updated_at) VALUES (?,?,?,?,?)",
						fmt.Sprintf("cc%06d", i), "EXPECTED", "CNY", now, now).Error
					if err != nil {
						t.Errorf("concurrent insert: %v", err)
						return
					}
					inserted.Add(1)
					time.Sleep(2 * time.Millisecond)
				}
			}()
			walk := func(query string, limit int) map[string]int {
				seen := map[string]int{}
				cursor := ""
				for pages := 0; ; pages++ {
					if pages > 10_000 {
						t.Fatal("pagination does not end")
					}
					p := getPage(t, m.URL()+"/v1/ledger/payments?limit="+fmt.Sprint(limit)+query+"&cursor="+cursor)
					for _, it := range p.Items {
						seen[it.OutTradeNo]++
					}
					if p.NextCursor == "" {
						return seen
					}
					cursor = p.NextCursor
				}
			}
			all := walk("", rows/10)
			success := walk("&state=SUCCESS&payer_openid=openid-pg", rows/13)
			close(stop)
			wg.Wait()
			for i := 0; i < rows; i++ {
				no := fmt.Sprintf("pg%06d", i)
				if all[no] != 1 {
					t.Fatalf("%s seen %d times in the full walk", no, all[no])
				}
				want := 1
				if i%3 == 0 {
					want = 0
				}
				if success[no] != want {
					t.Fatalf("%s seen %d times in the SUCCESS walk, want %d", no, success[no], want)
				}
			}
			for no, n := range all { // concurrent inserts may or may not show, but never twice
				if n != 1 {
					t.Fatalf("%s seen %d times", no, n)
				}
			}
			wantSuccess := rows - (rows+2)/3
			if len(success) != wantSuccess {
				t.Fatalf("SUCCESS walk saw %d payments, want %d", len(success), wantSuccess)
			}
			if inserted.Load() == 0 {
				t.Fatal("no concurrent inserts happened")
			}
			// CSV export of the same filter streams every row.
			status, body, hdr := getRaw(t, m.URL()+"/v1/ledger/payments?state=SUCCESS&payer_openid=openid-pg", financeKey, "text/csv")
			if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
				t.Fatalf("csv: status=%d type=%s", status, hdr.Get("Content-Type"))
			}
			recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
			if err != nil || len(recs) != wantSuccess+1 || recs[0][1] != "out_trade_no" {
				t.Fatalf("csv: %d records, err %v", len(recs), err)
			}
		})
	}
}

// TestLedgerFilterAbuse sends SQL metacharacters and absurd values to
// every filter: the answer is 400 EINVALID or an empty page, never a
// database error.
func TestLedgerFilterAbuse(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			seedPayments(t, m, "ab", 20)
			lists := []string{"payments", "refunds", "notifications", "outbox-jobs"}
			params := []string{"state", "from", "to", "out_trade_no", "transaction_id", "out_refund_no", "payer_openid",
				"source", "kind", "cursor", "limit", "format", "nonsense"}
			values := []string{"'; DROP TABLE payments;--", "%", "_", "ab%", "\x00", "ab000001\x00", "' OR '1'='1",
				"\\", "\"", "😀", "é", strings.Repeat("a", 65), strings.Repeat("9", 5000), "-1", "0",
				"1000000000000", "99999-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "NaN", "", " ", "SUCCESS OR 1=1",
				"success", "bnVsbA", "djE6LTE", "djE6MA", "djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}
			for _, list := range lists {
				for _, p := range params {
					for _, v := range values {
						u := m.URL() + "/v1/ledger/" + list + "?" + p + "=" + url.QueryEscape(v)
						status, body, _ := getRaw(t, u, financeKey, "")
						switch status {
						case 400:
							if !bytes.Contains(body, []byte(`"EINVALID"`)) {
								t.Fatalf("%s: 400 without EINVALID: %s", u, body)
							}
						case 413: // longer than the audit log keeps
							if len(u)-len(m.URL()) <= ledger.MaxAuditPath || !bytes.Contains(body, []byte(`"ETOO_LARGE"`)) {
								t.Fatalf("%s: 413 for %d bytes: %s", u, len(u)-len(m.URL()), body)
							}
						case 200:
							var pg page
							if err := json.Unmarshal(body, &pg); err != nil {
								t.Fatalf("%s: %v", u, err)
							}
							if p != "limit" && p != "format" && p != "cursor" && len(pg.Items) != 0 {
								t.Fatalf("%s: %d items, want none", u, len(pg.Items))
							}
						default:
							t.Fatalf("%s: status=%d body=%s", u, status, body)
						}
					}
				}
			}
			// Inverted and repeated ranges are refused.
			for _, q := range []string{"from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", "state=SUCCESS&state=CLOSED"} {
				if status, body, _ := getRaw(t, m.URL()+"/v1/ledger/payments?"+q, financeKey, ""); status != 400 {
					t.Fatalf("%s: status=%d body=%s", q, status, body)
				}
			}
			// The table is still there and whole.
			if p := getPage(t, m.URL()+"/v1/ledger/payments?limit=1000"); len(p.Items) != 20 {
				t.Fatalf("after abuse: %d payments, want 20", len(p.Items))
			}
			for _, u := range []string{"/v1/ledger/totals?from=1999-12-31", "/v1/ledger/totals?from=2020-01-01&to=2099-01-01",
				"/v1/ledger/totals?from=%27", "/v1/reconciliations/2020-13-01", "/v1/reconciliations/%00",
				"/v1/ledger/payments/%27%3B%20DROP/timeline", "/v1/ledger/payments/%27%3B%20DROP",
				"/v1/ledger/payments/%FF%00abc", "/v1/ledger/payments/" + strings.Repeat("x", 65)} {
				if status, body, _ := getRaw(t, m.URL()+u, financeKey, ""); status != 400 {
					t.Fatalf("%s: status=%d body=%s, want 400", u, status, body)
				}
			}
		})
	}
}

// TestFinanceAuth: no key, unknown key, revoked key → 401; wrong role →
// 403; keys from `gateway apikey create` work and are audited, and so are
// the commands that create and revoke them (who ran them, on what).
func TestFinanceAuth(t *testing.T) {
	cfg := testConfig(t, backends[0])
	m := startGateway(t, cfg)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte("database:\n  dsn: \""+cfg.Database.DSN+"\"\nlog:\n  level: error\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	create := func(name, role string) string {
		var out bytes.Buffer
		if err := apikeyCmd(context.Background(), []string{"create", "--config", path, "--name", name, "--role", role}, &out); err != nil {
			t.Fatalf("apikey create %s: %v", name, err)
		}
		return strings.TrimSpace(out.String())
	}
	alice, bob := create("alice", "finance"), create("bob", "service")
	if err := apikeyCmd(context.Background(), []string{"create", "--config", path, "--name", "alice", "--role", "ops"}, io.Discard); err == nil {
		t.Fatal("second active key for alice was created")
	}
	u := m.URL() + "/v1/ledger/payments"
	cases := []struct {
		name, key string
		status    int
	}{
		{"no key", "", 401}, {"unknown key", "gwk_nope", 401}, {"service role", serviceKey, 403},
		{"db service key", bob, 403}, {"config finance key", financeKey, 200}, {"ops key", opsKey, 200},
		{"db finance key", alice, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if status, body, _ := getRaw(t, u, tc.key, ""); status != tc.status {
				t.Fatalf("status=%d body=%s, want %d", status, body, tc.status)
			}
		})
	}
	if err := apikeyCmd(context.Background(), []string{"revoke", "--config", path, "--name", "alice"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := getRaw(t, u, alice, ""); status != 401 {
		t.Fatalf("revoked key: status=%d, want 401", status)
	}
	keys, err := m.Store.APIKeys(context.Background())
	if err != nil || len(keys) != 2 || keys[0].LastUsedAt == nil || keys[0].RevokedAt == nil {
		t.Fatalf("keys=%+v err=%v", keys, err)
	}
	entries, err := m.Store.AuditLog(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	who := map[string]int{}
	var cli []string
	for _, e := range entries {
		if e.Role == "cli" {
			if !strings.HasPrefix(e.Principal, "cli:") || e.Principal == "cli:" || e.FinishedAt == nil {
				t.Fatalf("admin command's audit entry %+v", e)
			}
			cli = append(cli, fmt.Sprintf("%s %s %d", e.Path, e.Target, e.Status))
			continue
		}
		want := 200
		if e.Role == "service" { // a key used past its role is audited too
			want = 403
		}
		if e.Status != want || e.Path != "/v1/ledger/payments" || e.FinishedAt == nil {
			t.Fatalf("audit entry %+v, want status %d", e, want)
		}
		who[e.Principal]++
	}
	if len(entries) != 9 || who["alice"] != 1 || who["fin"] != 1 || who["ops"] != 1 || who["bob"] != 1 {
		t.Fatalf("audit log by principal = %v, want alice, fin, ops, bob and the config service key once each (no 401)", who)
	}
	slices.Sort(cli)
	if want := []string{"gateway apikey create role=finance name=alice 200", "gateway apikey create role=ops name=alice 500",
		"gateway apikey create role=service name=bob 200", "gateway apikey revoke role= name=alice 200"}; !slices.Equal(cli, want) {
		t.Fatalf("admin commands in the audit log:\n got %q\nwant %q", cli, want)
	}
}

// TestAuditLogAPI: ops reads the audit log (filtered by principal, paged,
// as CSV); finance and service keys are refused; bad filters are 400; and
// each read of the audit log is audited itself.
func TestAuditLogAPI(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			for range 3 {
				getRaw(t, m.URL()+"/v1/ledger/payments?state=SUCCESS", financeKey, "")
			}
			getRaw(t, m.URL()+"/v1/ledger/refunds", opsKey, "")
			u := m.URL() + "/v1/ledger/audit"
			for key, want := range map[string]int{financeKey: 403, serviceKey: 403, "": 401} {
				if status, body, _ := getRaw(t, u, key, ""); status != want {
					t.Errorf("key %q: %d %s, want %d", key, status, body, want)
				}
			}
			for _, bad := range []string{"?principal=a%27%20OR%201=1", "?state=SUCCESS", "?out_trade_no=x1", "?limit=0"} {
				if status, body, _ := getRaw(t, u+bad, opsKey, ""); status != 400 || !strings.Contains(string(body), "EINVALID") {
					t.Errorf("%s: %d %s, want 400 EINVALID", bad, status, body)
				}
			}
			entries := auditPage(t, u+"?principal=fin&limit=2")
			if len(entries.Items) != 2 || entries.NextCursor == "" {
				t.Fatalf("first page %+v, want 2 entries and a cursor", entries)
			}
			rest := auditPage(t, u+"?principal=fin&cursor="+entries.NextCursor)
			all := append(entries.Items, rest.Items...)
			if len(all) != 4 || rest.NextCursor != "" {
				t.Fatalf("fin's entries %+v, want the 3 payment reads and the refused audit read", all)
			}
			for i, e := range all {
				path, status := "/v1/ledger/payments?state=SUCCESS", 200
				if i == 3 { // a key used past its role is audited
					path, status = "/v1/ledger/audit", 403
				}
				if e.Principal != "fin" || e.Role != "finance" || e.Path != path || e.Status != status {
					t.Errorf("entry %d: %+v, want %s answered %d", i, e, path, status)
				}
			}
			status, body, hdr := getRaw(t, u+"?principal=ops", opsKey, "text/csv")
			lines := strings.Split(strings.TrimSpace(string(body)), "\n")
			if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") || len(lines) < 3 ||
				!strings.HasPrefix(lines[0], "id,principal,role,method,path,status") || !strings.HasSuffix(lines[0], ",finished_at,target") {
				t.Fatalf("CSV: %d %s", status, body)
			}
			if !strings.Contains(string(body), "/v1/ledger/refunds") || !strings.Contains(string(body), "/v1/ledger/audit") {
				t.Errorf("ops's CSV lacks the refunds read or the audit reads themselves:\n%s", body)
			}
		})
	}
}

type auditEntries struct {
	Items      []ledger.AuditEntry `json:"items"`
	NextCursor string              `json:"next_cursor"`
}

func auditPage(t *testing.T, u string) auditEntries {
	t.Helper()
	return getJSON[auditEntries](t, u, opsKey)
}

// TestTimelineAndTotals checks the per-order timeline and daily totals.
func TestTimelineAndTotals(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			daytest.AwayFromMidnight(t, time.Minute) // the payment and the refunds on the day totalled
			no := uniqueNo("tl")
			if status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(no, 1000)); status != 201 {
				t.Fatalf("register: %d %v", status, body)
			}
			n := mustNotification(k.PaymentNotification(paidTx(k, no, 1000), wxpaysim.PublicKeyMode(), time.Now()))
			if status, _ := post(t, m.URL()+paymentPath, n); status != 204 {
				t.Fatalf("notify status=%d", status)
			}
			now := time.Now().UTC()
			insertRefund(t, m, no, "R"+no, 300, "SUCCESS", now)
			insertRefund(t, m, no, "F"+no, 200, "FAILED", now)
			status, body, _ := getRaw(t, m.URL()+"/v1/ledger/payments/"+no+"/timeline", financeKey, "")
			if status != 200 {
				t.Fatalf("timeline: %d %s", status, body)
			}
			var tl struct {
				Events []ledger.TimelineEvent `json:"events"`
			}
			if err := json.Unmarshal(body, &tl); err != nil {
				t.Fatal(err)
			}
			var types []string
			for i, e := range tl.Events {
				types = append(types, e.Type)
				if i > 0 && e.At.Before(tl.Events[i-1].At) {
					t.Fatalf("timeline out of order: %v", tl.Events)
				}
			}
			if got := strings.Join(types, ","); strings.Count(got, "transition") != 2 || strings.Count(got, "notification") != 1 || strings.Count(got, "refund") != 2 {
				t.Fatalf("timeline types = %s", got)
			}
			if status, _, _ := getRaw(t, m.URL()+"/v1/ledger/payments/nosuchorder/timeline", financeKey, ""); status != 404 {
				t.Fatalf("unknown order timeline status=%d", status)
			}
			day := ledger.DayOf(now)
			status, body, _ = getRaw(t, m.URL()+"/v1/ledger/totals?from="+day+"&to="+day, financeKey, "")
			var totals struct{ Days []ledger.DayTotal }
			if status != 200 || json.Unmarshal(body, &totals) != nil || len(totals.Days) != 1 {
				t.Fatalf("totals: %d %s", status, body)
			}
			if d := totals.Days[0]; d.Paid != 1000 || d.Refunded != 300 || d.Net != 700 || d.PaidCount != 1 || d.RefundCount != 1 {
				t.Fatalf("totals = %+v", d)
			}
			_, body, _ = getRaw(t, m.URL()+"/v1/ledger/totals?format=csv&from="+day, financeKey, "")
			if !strings.Contains(string(body), day+",1,1000,1,300,700") {
				t.Fatalf("totals csv: %s", body)
			}
		})
	}
}

// insertRefund writes a refund row as the refund flow would.
func insertRefund(t *testing.T, m *Main, outTradeNo, outRefundNo string, amount int64, state string, at time.Time) {
	t.Helper()
	var success any
	if state == "SUCCESS" {
		success = at
	}
	err := m.Store.DB().Exec(`INSERT INTO refunds (out_refund_no, out_trade_no, state, amount, total, requester, success_time, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?,?)`, outRefundNo, outTradeNo, state, amount, amount, "test", success, at, at).Error
	if err != nil {
		t.Fatalf("insert refund: %v", err)
	}
}

// TestAdminCommandsNeedANamedDatabase: serve or an admin command without
// --config, GATEWAY_CONFIG or GATEWAY_DATABASE_DSN is refused before it
// opens anything, so it cannot act on (or serve WeChat Pay from) the
// default local SQLite file while the gateway's database stays as it was.
func TestAdminCommandsNeedANamedDatabase(t *testing.T) {
	t.Setenv("GATEWAY_CONFIG", "")
	t.Setenv("GATEWAY_DATABASE_DSN", "")
	t.Chdir(t.TempDir())
	for _, args := range [][]string{
		{"apikey", "create", "--name", "alice", "--role", "finance"},
		{"apikey", "revoke", "--name", "alice"},
		{"apikey", "list"},
		{"reconcile", "--date", "2026-11-01"},
		{"outbox", "replay", "7"},
		{"migrate"},
		{"serve"},
		{},
	} {
		err := run(args)
		if err == nil || !strings.Contains(err.Error(), "no database named") {
			t.Errorf("gateway %s: err = %v, want a refusal naming the missing database", strings.Join(args, " "), err)
		}
	}
	// A config file that names no database (its DSN left to a secret
	// that was not mounted) is refused too.
	noDSN := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(noDSN, []byte("log:\n  level: error\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"serve", "--config", noDSN}, {"apikey", "list", "--config", noDSN}} {
		if err := run(args); err == nil || !strings.Contains(err.Error(), "names no database.dsn") {
			t.Errorf("gateway %s: err = %v, want a refusal naming the missing database.dsn", strings.Join(args, " "), err)
		}
	}
	if _, err := os.Stat(".run"); !os.IsNotExist(err) {
		t.Fatalf("a refused command left .run behind (stat: %v)", err)
	}
	t.Setenv("GATEWAY_DATABASE_DSN", filepath.Join(t.TempDir(), "named.db"))
	// An admin command does not migrate as a side effect: it asks for
	// `gateway migrate` first.
	if err := run([]string{"apikey", "list"}); err == nil || !strings.Contains(err.Error(), "not a gateway database") {
		t.Fatalf("apikey list on a database never migrated (a mistyped path): %v, want a refusal", err)
	}
	if err := run([]string{"migrate"}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if err := run([]string{"apikey", "list"}); err != nil {
		t.Fatalf("apikey list with GATEWAY_DATABASE_DSN: %v", err)
	}
	// A database an older release migrated: an admin command of this one
	// asks for `gateway migrate` rather than migrating it.
	db, _, err := ledgerdb.Open(ledgerdb.Config{DSN: os.Getenv("GATEWAY_DATABASE_DSN")})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)").Error; err != nil {
		t.Fatal(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		sqlDB.Close()
	}
	if err := run([]string{"apikey", "list"}); err == nil || !strings.Contains(err.Error(), "run `gateway migrate` first") {
		t.Fatalf("apikey list on a database one migration behind: %v, want a refusal", err)
	}
}

// TestMalformedQueriesAreRefused: a query string Go would read only in
// part (a bad escape, a ";") or whose text is not UTF-8 is refused 400;
// before, the pair was dropped silently and the list answered with every
// payer's payments, as if unfiltered. The key is checked first: each
// refusal of a finance key's request is audited, and an unknown key gets
// 401 whatever its query.
func TestMalformedQueriesAreRefused(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			seedPayments(t, m, "mq", 5)
			for _, q := range []string{"payer_openid=o%zz", "payer_openid=openid-other;", "payer_openid=%ff", "state=\xff",
				"payer_openid=openid-other&format=csv;"} {
				status, body, _ := getRaw(t, m.URL()+"/v1/ledger/payments?"+q, financeKey, "")
				if status != 400 || !bytes.Contains(body, []byte(`"EINVALID"`)) {
					t.Fatalf("?%s: %d %s, want 400 EINVALID", q, status, body)
				}
			}
			refused := 0
			for _, e := range auditLog(t, m) {
				if e.Status == 400 && e.Principal == "fin" {
					refused++
				}
			}
			if refused != 5 {
				t.Fatalf("audit log: %d refused requests of the finance key, want 5", refused)
			}
			if status, _, _ := getRaw(t, m.URL()+"/v1/ledger/payments?payer_openid=o%zz", "gwk_nope", ""); status != 401 {
				t.Fatalf("unknown key with a malformed query: %d, want 401", status)
			}
			if status, body, _ := getRaw(t, m.URL()+"/v1/ledger/payments?payer_openid=openid-other", financeKey, ""); status != 200 ||
				bytes.Contains(body, []byte("openid-mq")) {
				t.Fatalf("a well-formed filter: %d %s", status, body)
			}
		})
	}
}

// TestKeyNamesAreNotShared: a name has one active key. `gateway apikey
// create` refuses a name auth.api_keys already has (two keys under one
// name would share its rate limit, and the audit log could not tell them
// apart), and a gateway refuses to start when a configured name has an
// active database key too.
func TestKeyNamesAreNotShared(t *testing.T) {
	cfg := testConfig(t, backends[0])
	running := startGateway(t, cfg)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	yaml := "database:\n  dsn: \"" + cfg.Database.DSN + "\"\nlog:\n  level: error\nauth:\n  api_keys:\n"
	for _, k := range cfg.Auth.APIKeys {
		yaml += "    - \"" + k + "\"\n"
	}
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	err := apikeyCmd(context.Background(), []string{"create", "--config", path, "--name", "ops", "--role", "finance"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "auth.api_keys has a key named ops") {
		t.Fatalf("apikey create under a configured name: %v, want a refusal", err)
	}
	if _, err := running.Store.CreateAPIKey(context.Background(), "ops", "finance", gateway.HashKey("other")); err != nil {
		t.Fatal(err)
	}
	startRefused(t, cfg, "names ops") // a configured name that has an active database key
}
