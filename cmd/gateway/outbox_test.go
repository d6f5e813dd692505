package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"paygateway/gateway/inventory"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
	"paygateway/ledger/ledgertest"
	"paygateway/retry"
)

// startInventory serves a fresh inventory simulator until the test ends.
func startInventory(t *testing.T) (*inventorysim.Sim, string) {
	t.Helper()
	sim := inventorysim.New()
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

// fastOutbox points cfg at the inventory simulator with millisecond timings.
func fastOutbox(cfg *Config, invURL string) {
	cfg.Inventory = InventoryConfig{BaseURL: invURL, Timeout: time.Second} // a loaded machine must not time out a healthy call
	cfg.Outbox = OutboxConfig{Workers: 4, Batch: 10, PollInterval: 5 * time.Millisecond, Lease: 5 * time.Second,
		InitialInterval: 20 * time.Millisecond, MaxInterval: time.Second, MaxElapsed: 30 * time.Second,
		Multiplier: 2, Jitter: 0.1}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// onlyJob returns the single outbox job of an order once it is in state.
func onlyJob(t *testing.T, s *ledger.Store, no, state string) ledger.OutboxJob {
	t.Helper()
	var job ledger.OutboxJob
	waitFor(t, 20*time.Second, "job of "+no+" in "+state, func() bool {
		jobs, err := s.Outbox().JobsOf(context.Background(), no)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) > 1 {
			t.Fatalf("order %s has %d jobs, want 1", no, len(jobs))
		}
		if len(jobs) == 1 {
			job = jobs[0]
		}
		return len(jobs) == 1 && job.State == state
	})
	return job
}

// payViaCallback posts a signed TRANSACTION.SUCCESS for a new order.
func payViaCallback(t *testing.T, m *Main, no string, amount int64) {
	t.Helper()
	k, _ := testKeys(t)
	n := mustNotification(k.PaymentNotification(paidTx(k, no, amount), wxpaysim.PublicKeyMode(), time.Now()))
	if status, body := post(t, m.URL()+paymentPath, n); status != 204 {
		t.Fatalf("notify %s: status=%d body=%v", no, status, body)
	}
}

func outcomes(h []retry.Attempt) []retry.Outcome {
	out := make([]retry.Outcome, len(h))
	for i, a := range h {
		out[i] = a.Outcome
	}
	return out
}

func TestOutboxRetriesServerErrorsWithGrowingDelays(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			inv.SetFaults(inventorysim.Faults{FailNext: 3})
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			m := startGateway(t, cfg)
			no := uniqueNo("obr")
			payViaCallback(t, m, no, 700)
			job := onlyJob(t, m.Store, no, ledger.JobDone)
			if got := inv.ConfirmCount(no); got != 1 {
				t.Fatalf("confirmations = %d, want 1", got)
			}
			if job.Attempts != 4 || fmt.Sprint(outcomes(job.History)) != "[retry retry retry done]" {
				t.Fatalf("attempts = %d, history %v; want 4: 3 retries then done", job.Attempts, outcomes(job.History))
			}
			var prev time.Duration
			for i, a := range job.History[:3] {
				delay := a.NextRunAt.Sub(a.FinishedAt)
				if delay <= prev {
					t.Fatalf("delay %d = %v, not above the previous %v", i+1, delay, prev)
				}
				if next := job.History[i+1]; next.StartedAt.Before(a.NextRunAt) {
					t.Fatalf("attempt %d started %v, before its next_run_at %v", next.Number, next.StartedAt, a.NextRunAt)
				}
				prev = delay
			}
		})
	}
}

func TestOutboxQueriesBeforeResending(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			const orders = 3
			inv.SetFaults(inventorysim.Faults{ApplyThenTimeoutNext: orders, ApplyThenTimeoutDelay: 2 * time.Second})
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			m := startGateway(t, cfg)
			var nos []string
			for i := 0; i < orders; i++ {
				no := uniqueNo("obq")
				nos = append(nos, no)
				payViaCallback(t, m, no, int64(100+i))
			}
			for _, no := range nos {
				job := onlyJob(t, m.Store, no, ledger.JobDone)
				if job.Attempts != 2 || fmt.Sprint(outcomes(job.History)) != "[retry done]" {
					t.Fatalf("%s: attempts %d, history %v; want a timed-out attempt, then done by query", no, job.Attempts, outcomes(job.History))
				}
				if got := inv.ConfirmCount(no); got != 1 {
					t.Fatalf("%s: confirmations = %d, want 1", no, got)
				}
			}
			if st := inv.Stats(); st.Posts != orders || st.ApplyThenTimeouts != orders || st.Gets < orders {
				t.Fatalf("inventory saw %+v; want exactly %d POSTs (one per order) and a query each", st, orders)
			}
		})
	}
}

// openStores opens n stores on one fresh database, like n gateway
// instances. SQLite (one in-process writer) gets one store.
func openStores(t *testing.T, b backend, n int) []*ledger.Store {
	t.Helper()
	dsn := ledgertest.SQLiteDSN(t)
	if b.mysql {
		dsn = ledgertest.MySQLDSN(t)
	} else {
		n = 1
	}
	var out []*ledger.Store
	for i := 0; i < n; i++ {
		db, dialect, err := ledgerdb.Open(ledgerdb.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB()
		t.Cleanup(func() { sqlDB.Close() })
		if err := ledger.Migrate(context.Background(), db, dialect); err != nil {
			t.Fatal(err)
		}
		out = append(out, ledger.NewStore(db, dialect))
	}
	return out
}

// runPool runs p until the test ends.
func runPool(t *testing.T, p *retry.Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// seedConfirmations writes n pending confirmation jobs directly (the
// ledger only writes them with a payment; here only the queue matters).
func seedConfirmations(t *testing.T, s *ledger.Store, n int) []string {
	t.Helper()
	now := time.Now().UTC()
	rows := make([]map[string]any, n)
	nos := make([]string, n)
	for i := range rows {
		no := fmt.Sprintf("drain%06d", i)
		key := "confirm:" + no
		body, _ := json.Marshal(inventory.Confirmation{Key: key, OutTradeNo: no, AmountTotal: int64(100 + i)})
		nos[i] = no
		rows[i] = map[string]any{"kind": ledger.JobConfirmInventory, "job_key": key, "out_trade_no": no,
			"payload": string(body), "state": ledger.JobPending, "attempts": 0, "last_error": "",
			"next_run_at": now, "created_at": now, "updated_at": now}
	}
	if err := s.DB().Table("outbox_jobs").CreateInBatches(rows, 250).Error; err != nil {
		t.Fatalf("seed jobs: %v", err)
	}
	return nos
}

func countJobs(t *testing.T, s *ledger.Store, where string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.DB().Table("outbox_jobs").Where(where, args...).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOutboxThreePoolsDrainEachJobOnce(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			stores := openStores(t, b, 3)
			const jobs = 1000
			nos := seedConfirmations(t, stores[0], jobs)
			for i := 0; i < 3; i++ {
				runPool(t, newOutboxPool(cfg, stores[i%len(stores)], fmt.Sprintf("gw%d", i), nil))
			}
			// SQLite's one connection serves all twelve workers, and its
			// 1000 jobs took 17-19 s under a loaded race-enabled suite and
			// 46 s once: minutes of room (returned from as soon as done).
			waitFor(t, 3*time.Minute, "all jobs done", func() bool {
				return countJobs(t, stores[0], "state = ?", ledger.JobDone) == jobs
			})
			// A job whose call timed out, or whose claim outlived its
			// lease, while the machine stalled (-race, other test
			// packages) takes a second attempt, which queries first and
			// sends nothing twice (checked below). Claims that collided
			// would show as many more.
			if n := countJobs(t, stores[0], "attempts > 2"); n != 0 {
				t.Fatalf("%d jobs took more than two attempts", n)
			}
			if n := countJobs(t, stores[0], "attempts = 2"); n > jobs/10 {
				t.Fatalf("%d jobs took a second attempt, want at most %d", n, jobs/10)
			} else if n > 0 {
				t.Logf("%d jobs took a second attempt", n)
			}
			for _, no := range nos {
				if got := inv.AppliedByKey("confirm:" + no); got != 1 {
					t.Fatalf("%s applied %d times, want 1", no, got)
				}
			}
			if st := inv.Stats(); st.Posts != jobs || st.Confirmations != jobs || st.Duplicates != 0 {
				t.Fatalf("inventory saw %+v; want %d POSTs, each applied once", st, jobs)
			}
			checkPoolsShared(t, stores[0], b.mysql)
		})
	}
}

// checkPoolsShared wants, on MySQL, at least two of the three pools to
// have made attempts: 1000 jobs, seeded before the pools start, take far
// longer to send than the microseconds between the pools' starts, and
// their claims skip each other's locked rows, so one pool draining them
// all means the claims exclude each other. SQLite's one writer can
// serialize the pools, so there the count is only logged.
func checkPoolsShared(t *testing.T, s *ledger.Store, mysql bool) {
	t.Helper()
	var workers []string
	if err := s.DB().Table("outbox_attempts").Distinct("worker").Pluck("worker", &workers).Error; err != nil {
		t.Fatal(err)
	}
	pools := map[string]bool{} // a worker id is "<pool>-w<n>"
	for _, w := range workers {
		if i := strings.LastIndex(w, "-w"); i >= 0 {
			w = w[:i]
		}
		pools[w] = true
	}
	t.Logf("%d workers of %d pools shared the jobs", len(workers), len(pools))
	if mysql && len(pools) < 2 {
		t.Errorf("attempts made by %d pool(s) %v, want the work shared", len(pools), pools)
	}
}

func TestOutboxLeaseExpiryHandsJobOver(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			s := openStores(t, b, 1)[0]
			ctx := context.Background()
			no := uniqueNo("oblease")
			k, _ := testKeys(t)
			tx := paidTx(k, no, 900)
			_, err := s.ApplyTransaction(ctx, ledger.TransactionUpdate{
				Notice:     ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback, EventType: "TRANSACTION.SUCCESS", OutTradeNo: no, Plaintext: "{}"},
				OutTradeNo: no, TransactionID: tx.TransactionID, TradeState: "SUCCESS", AmountTotal: 900, PayerTotal: 900})
			if err != nil {
				t.Fatal(err)
			}
			// A worker claims the job, sends the confirmation and dies
			// before it can record anything.
			claimed, err := s.Outbox().Claim(ctx, "crashed", 1, 300*time.Millisecond)
			if err != nil || len(claimed) != 1 {
				t.Fatalf("claim: %v, %d jobs", err, len(claimed))
			}
			var cf inventory.Confirmation
			_ = json.Unmarshal(claimed[0].Payload, &cf)
			if err := inventory.New(inventory.Config{BaseURL: url}).Confirm(ctx, cf); err != nil {
				t.Fatalf("crashed worker's send: %v", err)
			}
			runPool(t, newOutboxPool(cfg, s, "survivor", nil))
			job := onlyJob(t, s, no, ledger.JobDone)
			if job.Attempts != 2 || len(job.History) != 1 || job.History[0].Worker == "crashed" {
				t.Fatalf("job = attempts %d, history %+v; want one recorded attempt by the survivor", job.Attempts, job.History)
			}
			if got, st := inv.ConfirmCount(no), inv.Stats(); got != 1 || st.Posts != 1 {
				t.Fatalf("confirmations = %d, posts = %d; want 1 and 1 (the survivor only queried)", got, st.Posts)
			}
			now := time.Now().UTC()
			late := retry.Attempt{JobID: job.ID, Number: 1, Worker: "crashed", Outcome: retry.OutcomeRetry, Err: "late",
				StartedAt: now, FinishedAt: now, NextRunAt: now}
			if err := s.Outbox().Retry(ctx, late); !errors.Is(err, retry.ErrLeaseLost) {
				t.Fatalf("crashed worker's late write: err = %v, want ErrLeaseLost", err)
			}
			if j := onlyJob(t, s, no, ledger.JobDone); j.LastError != "" {
				t.Fatalf("late write changed the job: %+v", j)
			}
		})
	}
}

func TestOutboxDeadLetterAndReplay(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			inv.SetFaults(inventorysim.Faults{PermanentNext: 2})
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			m := startGateway(t, cfg)
			viaAPI, viaCLI := uniqueNo("obd"), uniqueNo("obc")
			payViaCallback(t, m, viaAPI, 300)
			payViaCallback(t, m, viaCLI, 400)
			dead := onlyJob(t, m.Store, viaAPI, ledger.JobDead)
			deadCLI := onlyJob(t, m.Store, viaCLI, ledger.JobDead)
			// The dead letters show in /metrics (a reading kept 10 s, so
			// the replays below do not show at once).
			deadLetters := `gateway_outbox_jobs{kind="inventory.confirm",state="DEAD"}`
			if n := scrape(t, m.URL(), deadLetters); n != 2 {
				t.Fatalf("%s = %v, want 2", deadLetters, n)
			}

			if status, _ := apiCall(t, "GET", m.URL()+"/v1/ops/outbox/dead", financeKey, nil); status != 403 {
				t.Fatalf("finance lists dead letters: status=%d, want 403", status)
			}
			status, body := apiCall(t, "GET", m.URL()+"/v1/ops/outbox/dead", opsKey, nil)
			listed, _ := body["jobs"].([]any)
			if status != 200 || len(listed) != 2 {
				t.Fatalf("list dead: status=%d body=%v", status, body)
			}
			first, _ := listed[0].(map[string]any)
			history, _ := first["history"].([]any)
			if first["key"] != "confirm:"+viaAPI || len(history) != 1 {
				t.Fatalf("dead job = %v, want confirm:%s with one attempt", first, viaAPI)
			}

			replayURL := fmt.Sprintf("%s/v1/ops/outbox/%d/replay", m.URL(), dead.ID)
			if status, body, _ := replayCall(t, replayURL, ""); status != 428 || body["code"] != "EPRECONDITION_REQUIRED" {
				t.Fatalf("replay without If-Match: status=%d body=%v, want 428 EPRECONDITION_REQUIRED", status, body)
			}
			missingURL := fmt.Sprintf("%s/v1/ops/outbox/%d/replay", m.URL(), dead.ID+1_000_000)
			for _, h := range []string{"", `"v1", x`, "*"} {
				if status, body, _ := replayCall(t, missingURL, h); status != 404 || body["code"] != "ENOTFOUND" {
					t.Fatalf("replay of a job that does not exist (If-Match %q): status=%d body=%v, want 404 ENOTFOUND", h, status, body)
				}
			}
			if status, body, _ := replayCall(t, replayURL, `"v1", x`); status != 400 || body["code"] != "EINVALID" {
				t.Fatalf("replay with a malformed If-Match: status=%d body=%v, want 400 EINVALID", status, body)
			}
			// RFC 9110 compares If-Match strongly: a weak tag, even of the
			// job's version, matches nothing.
			weak := fmt.Sprintf("W/%q", first["version"])
			if status, body, hdr := replayCall(t, replayURL, weak); status != 412 || body["code"] != "EPRECONDITION_FAILED" ||
				hdr.Get("ETag") != fmt.Sprintf("%q", first["version"]) {
				t.Fatalf("replay with a weak If-Match: status=%d body=%v ETag %q, want 412 and the version", status, body, hdr.Get("ETag"))
			}
			onlyJob(t, m.Store, viaAPI, ledger.JobDead)
			status, body, hdr := replayCall(t, replayURL, fmt.Sprintf(`"1", %s, %q`, weak, first["version"]))
			if status != 200 || hdr.Get("ETag") == "" || hdr.Get("ETag") == fmt.Sprintf("%q", first["version"]) {
				t.Fatalf("replay: status=%d body=%v ETag %q", status, body, hdr.Get("ETag"))
			}
			done := onlyJob(t, m.Store, viaAPI, ledger.JobDone)
			if fmt.Sprint(outcomes(done.History)) != "[dead replayed done]" || done.History[1].Worker != "ops:ops" {
				t.Fatalf("history after replay = %v (replayed by %q)", outcomes(done.History), done.History[1].Worker)
			}
			status, body, _ = replayCall(t, replayURL, "*")
			if status != 409 || body["code"] != "ECONFLICT" {
				t.Fatalf("replay of a done job: status=%d body=%v, want 409 ECONFLICT", status, body)
			}

			if _, err := replayOutboxJob(context.Background(), m.Config, deadCLI.ID); err != nil {
				t.Fatalf("outbox replay command: %v", err)
			}
			if e := lastAudit(t, m.Store); e.Path != "gateway outbox replay" || e.Target != fmt.Sprintf("job=%d", deadCLI.ID) ||
				e.Status != 200 || e.Role != "cli" {
				t.Fatalf("the replay command's audit entry: %+v", e)
			}
			onlyJob(t, m.Store, viaCLI, ledger.JobDone)
			for _, no := range []string{viaAPI, viaCLI} {
				if got := inv.ConfirmCount(no); got != 1 {
					t.Fatalf("%s confirmations = %d, want 1", no, got)
				}
			}
			// The attempts this instance stored: two dead, then two done
			// after the replays.
			waitFor(t, 20*time.Second, "the attempts counted", func() bool {
				return scrape(t, m.URL(), `gateway_outbox_attempts_total{outcome="dead"}`) == 2 &&
					scrape(t, m.URL(), `gateway_outbox_attempts_total{outcome="done"}`) == 2
			})

		})
	}
}

// TestReplayNeedsTheVersionSeen: an operator looks at a dead stock
// confirmation (the inventory refused it); WeChat Pay then reports its
// order refunded outside the gateway, and the job says held. The replay
// the operator decided on before is refused (412, the job untouched, the
// stock not confirmed); on the version the job has now it is replayed.
func TestReplayNeedsTheVersionSeen(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			inv.SetFaults(inventorysim.Faults{PermanentNext: 1})
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			m := startGateway(t, cfg)
			no := uniqueNo("obv")
			payViaCallback(t, m, no, 300)
			looked := onlyJob(t, m.Store, no, ledger.JobDead)
			refundedOutside(t, m, no, 300)
			held := onlyJob(t, m.Store, no, ledger.JobDead)
			if held.Version == looked.Version || !strings.HasPrefix(held.LastError, "held:") {
				t.Fatalf("after the refund outside: %+v, want it held at a new version", held)
			}
			replayURL := fmt.Sprintf("%s/v1/ops/outbox/%d/replay", m.URL(), looked.ID)
			status, body, hdr := replayCall(t, replayURL, `"`+looked.Version+`"`)
			if status != 412 || body["code"] != "EPRECONDITION_FAILED" || hdr.Get("ETag") != `"`+held.Version+`"` {
				t.Fatalf("replay on the version seen first: %d %v ETag %q, want 412 EPRECONDITION_FAILED, ETag %q",
					status, body, hdr.Get("ETag"), held.Version)
			}
			if j := onlyJob(t, m.Store, no, ledger.JobDead); len(j.History) != len(held.History) || j.Version != held.Version {
				t.Fatalf("job after the refused replay: %+v, want it as it was", j)
			}
			if status, body, _ := replayCall(t, replayURL, hdr.Get("ETag")); status != 200 {
				t.Fatalf("replay on the version now: %d %v", status, body)
			}
			onlyJob(t, m.Store, no, ledger.JobDone)
			if got := inv.ConfirmCount(no); got != 1 {
				t.Fatalf("confirmations of %s = %d, want 1 (replayed knowingly)", no, got)
			}
		})
	}
}

// replayCall replays a dead job with the ops key and If-Match ifMatch
// (none when empty).
func replayCall(t *testing.T, url, ifMatch string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, nil)
	req.Header.Set("X-Api-Key", opsKey)
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	status, body := decode(t, resp)
	return status, body, resp.Header
}

// refundedOutside posts WeChat Pay's signed REFUND.SUCCESS of a refund of
// order no the gateway never made.
func refundedOutside(t *testing.T, m *Main, no string, amount int64) {
	t.Helper()
	k, _ := testKeys(t)
	rn := wxpaysim.RefundNotice{MchID: k.MchID, OutTradeNo: no, TransactionID: "42000" + no, OutRefundNo: "RO" + no,
		RefundID: "50" + no, RefundStatus: "SUCCESS", SuccessTime: time.Now().Format(time.RFC3339),
		Amount: wxpaysim.RefundNoticeAmount{Total: amount, Refund: amount, PayerTotal: amount, PayerRefund: amount}}
	n := mustNotification(k.RefundNotification(rn, wxpaysim.PublicKeyMode(), time.Now()))
	if status, body := post(t, m.URL()+refundNotifyPath, n); status != 204 {
		t.Fatalf("refund outside of %s: status=%d body=%v", no, status, body)
	}
}

// lastAudit is the newest audit entry.
func lastAudit(t *testing.T, s *ledger.Store) ledger.AuditEntry {
	t.Helper()
	entries, err := s.AuditLog(context.Background(), 1)
	if err != nil || len(entries) != 1 {
		t.Fatalf("audit log: %v, %v", entries, err)
	}
	return entries[0]
}

// TestOutboxReplayIDRange: the CLI refuses a job id no ledger row can
// have (above 2^63-1) before it reads any config or opens the database.
func TestOutboxReplayIDRange(t *testing.T) {
	for _, id := range []string{"0", "x", "9223372036854775808"} {
		err := outboxCommand(context.Background(), []string{"replay", id, "--config", "/nonexistent.yaml"})
		if err == nil || !strings.Contains(err.Error(), "must be a positive integer") {
			t.Errorf("outbox replay %s: %v, want the id refused", id, err)
		}
	}
}
