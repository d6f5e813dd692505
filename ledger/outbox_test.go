package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/migrations"
	"paygateway/retry"
)

func TestPaymentSuccessEnqueuesConfirmationOnce(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("ob-n1", "ob-o1", "ob-tx1", 300)); err != nil {
			t.Fatalf("apply: %v", err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("ob-n2", "ob-o1", "ob-tx1", 300)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("replay: err = %v", err)
		}
		jobs, err := s.Outbox().JobsOf(ctx, "ob-o1")
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 1 {
			t.Fatalf("jobs = %d, want 1", len(jobs))
		}
		j := jobs[0]
		if j.Kind != ledger.JobConfirmInventory || j.Key != "confirm:ob-o1" || j.State != ledger.JobPending {
			t.Fatalf("job = %+v", j)
		}
		var body map[string]any
		if err := json.Unmarshal(j.Payload, &body); err != nil {
			t.Fatal(err)
		}
		if body["key"] != "confirm:ob-o1" || body["out_trade_no"] != "ob-o1" || body["amount_total"] != 300.0 {
			t.Fatalf("payload = %s", j.Payload)
		}
	})
}

// TestRejectedPaymentEnqueuesNothing: a payment the ledger refuses (in
// another currency than CNY) confirms no stock. One of another amount
// than registered is recorded, and its confirmation stored held (DEAD).
func TestRejectedPaymentEnqueuesNothing(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		o := ledger.Order{OutTradeNo: "ob-o2", AmountTotal: 500, ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		usd := paid("ob-n2", "ob-o2", "ob-tx2", 500)
		usd.Currency = "USD"
		var mismatch *ledger.AmountMismatchError
		if _, err := s.ApplyTransaction(ctx, usd); !errors.As(err, &mismatch) || mismatch.Currency != "USD" {
			t.Fatalf("err = %v, want a currency mismatch", err)
		}
		if jobs, err := s.Outbox().JobsOf(ctx, "ob-o2"); err != nil || len(jobs) != 0 {
			t.Fatalf("jobs = %+v, err %v; want none", jobs, err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("ob-n3", "ob-o2", "ob-tx3", 499)); err != nil {
			t.Fatalf("another amount: err = %v, want it recorded", err)
		}
		jobs, err := s.Outbox().JobsOf(ctx, "ob-o2")
		if err != nil || len(jobs) != 1 || jobs[0].State != ledger.JobDead || !strings.HasPrefix(jobs[0].LastError, "held: ") {
			t.Fatalf("jobs = %+v, err %v; want the confirmation, held", jobs, err)
		}
	})
}

func TestRefundSuccessEnqueuesRelease(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		for i := 0; i < 2; i++ {
			if err := s.RefundSucceeded(ctx, "ob-r1", "ob-o3", 120); err != nil {
				t.Fatalf("refund succeeded #%d: %v", i, err)
			}
		}
		jobs, err := s.Outbox().JobsOf(ctx, "ob-o3")
		if err != nil || len(jobs) != 1 {
			t.Fatalf("jobs = %+v, err %v; want 1", jobs, err)
		}
		j := jobs[0]
		if j.Kind != ledger.JobReleaseInventory || j.Key != "release:ob-r1" || j.OutRefundNo != "ob-r1" {
			t.Fatalf("job = %+v", j)
		}
		var body map[string]any
		_ = json.Unmarshal(j.Payload, &body)
		if body["out_refund_no"] != "ob-r1" || body["amount"] != 120.0 || body["key"] != "release:ob-r1" {
			t.Fatalf("payload = %s", j.Payload)
		}
	})
}

func TestOutboxLeaseAndSettle(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("ob-n4", "ob-o4", "ob-tx4", 100)); err != nil {
			t.Fatal(err)
		}
		clock := time.Now().UTC() // moved by hand: a slow run cannot outlast the lease early
		q := s.WithClock(func() time.Time { return clock }).Outbox()
		a, err := q.Claim(ctx, "w-a", 10, time.Minute)
		if err != nil || len(a) != 1 || a[0].Attempt != 1 {
			t.Fatalf("claim a = %+v, err %v", a, err)
		}
		if again, err := q.Claim(ctx, "w-b", 10, time.Minute); err != nil || len(again) != 0 {
			t.Fatalf("claim during the lease = %+v, err %v; want none (a leased job)", again, err)
		}
		clock = clock.Add(time.Minute + time.Second)
		b, err := q.Claim(ctx, "w-b", 10, time.Minute)
		if err != nil || len(b) != 1 || b[0].Attempt != 2 || b[0].ID != a[0].ID {
			t.Fatalf("claim after lease = %+v, err %v", b, err)
		}
		now := time.Now().UTC()
		stale := retry.Attempt{JobID: a[0].ID, Number: 1, Worker: "w-a", Outcome: retry.OutcomeDone, StartedAt: now, FinishedAt: now}
		if err := q.Complete(ctx, stale); !errors.Is(err, retry.ErrLeaseLost) {
			t.Fatalf("stale complete: err = %v, want ErrLeaseLost", err)
		}
		next := now.Add(time.Hour)
		cur := retry.Attempt{JobID: b[0].ID, Number: 2, Worker: "w-b", Outcome: retry.OutcomeRetry, Err: "boom",
			StartedAt: now, FinishedAt: now, NextRunAt: next}
		if err := q.Retry(ctx, cur); err != nil {
			t.Fatalf("retry: %v", err)
		}
		j, err := q.Job(ctx, b[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != ledger.JobPending || j.Attempts != 2 || j.LastError != "boom" || len(j.History) != 2 {
			t.Fatalf("job after retry = %+v", j)
		}
		if d := j.NextRunAt.Sub(next); d > time.Millisecond || d < -time.Millisecond {
			t.Fatalf("next_run_at = %v, want %v", j.NextRunAt, next)
		}
		if _, err := q.Replay(ctx, j.ID, "test"); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("replay of a pending job: err = %v, want ErrConflict", err)
		}
	})
}

func TestOutboxReleaseGivesBackAnUnstartedClaim(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("ob-n5", "ob-o5", "ob-tx5", 100)); err != nil {
			t.Fatal(err)
		}
		q := s.Outbox()
		a, err := q.Claim(ctx, "w-a", 10, time.Hour)
		if err != nil || len(a) != 1 {
			t.Fatalf("claim = %+v, err %v", a, err)
		}
		if err := q.Release(ctx, a[0], "w-stranger"); err != nil {
			t.Fatal(err)
		}
		if b, err := q.Claim(ctx, "w-b", 10, time.Hour); err != nil || len(b) != 0 {
			t.Fatalf("claim = %+v, err %v; want none (a stranger released someone else's claim?)", b, err)
		}
		if err := q.Release(ctx, a[0], "w-a"); err != nil {
			t.Fatal(err)
		}
		j, err := q.Job(ctx, a[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if j.FirstAttemptAt != nil {
			t.Fatalf("released job keeps first_attempt_at %v: its retry budget would run from a claim never attempted", j.FirstAttemptAt)
		}
		b, err := q.Claim(ctx, "w-b", 10, time.Hour)
		if err != nil || len(b) != 1 || b[0].ID != a[0].ID || b[0].Attempt != 1 {
			t.Fatalf("claim after release = %+v, err %v (want the same job, still attempt 1)", b, err)
		}
	})
}

// TestClaimLocksOnlyWhatItTakes: with a backlog of 5,000 due jobs, a
// claim of 20 locks about 20 rows, not the backlog. (Sorting the whole due
// set under FOR UPDATE locked every row and, with 32 claimers after a
// MariaDB restart, exhausted InnoDB's lock memory in the chaos run.)
func TestClaimLocksOnlyWhatItTakes(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	if err := s.InsertDueJobs(ctx, "backlog", 5000); err != nil {
		t.Fatal(err)
	}
	ids, locked, err := s.RowsLockedByClaim(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 20 || locked > 60 {
		t.Fatalf("claimed %d jobs, locked %d rows; want 20 jobs and at most 60 rows locked", len(ids), locked)
	}
}

// TestReleaseWaitsForItsConfirm: a refund's release is not claimed while
// its order's confirmation is in backoff or dead, so stock is never
// released before it was confirmed (and then confirmed for an order
// already refunded).
func TestReleaseWaitsForItsConfirm(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("ob-n6", "ob-o6", "ob-tx6", 100)); err != nil {
			t.Fatal(err)
		}
		if err := s.RefundSucceeded(ctx, "ob-r6", "ob-o6", 100); err != nil {
			t.Fatal(err)
		}
		if err := s.RefundSucceeded(ctx, "ob-r7", "ob-o7", 50); err != nil { // an order without a confirmation
			t.Fatal(err)
		}
		q := s.Outbox()
		first := claimKinds(t, q, "w-a")
		if len(first) != 2 || first["confirm:ob-o6"].ID == 0 || first["release:ob-r7"].ID == 0 {
			t.Fatalf("first claim = %v, want the confirmation and the other order's release", first)
		}
		confirm := first["confirm:ob-o6"]
		now := time.Now().UTC()
		settle := func(a retry.Attempt, f func(context.Context, retry.Attempt) error) {
			t.Helper()
			a.JobID, a.Worker, a.StartedAt, a.FinishedAt = confirm.ID, "w-a", now, now
			if err := f(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		settle(retry.Attempt{Number: 1, Outcome: retry.OutcomeRetry, Err: "503", NextRunAt: now.Add(time.Hour)}, q.Retry)
		if got := claimKinds(t, q, "w-b"); len(got) != 0 {
			t.Fatalf("claimed %v while the confirmation waits to retry", got)
		}
		forceDue(t, s, confirm.ID)
		again := claimKinds(t, q, "w-a")
		if len(again) != 1 || again["confirm:ob-o6"].ID != confirm.ID {
			t.Fatalf("claim = %v, want only the confirmation", again)
		}
		settle(retry.Attempt{Number: 2, Outcome: retry.OutcomeDead, Err: "422"}, q.Dead)
		if got := claimKinds(t, q, "w-b"); len(got) != 0 {
			t.Fatalf("claimed %v while the confirmation is dead", got)
		}
		// The waiting release died with it, in sight of the dead-letter
		// list; one created now is stored dead; neither replays alone.
		if err := s.RefundSucceeded(ctx, "ob-r9", "ob-o6", 10); err != nil {
			t.Fatal(err)
		}
		dead, err := q.DeadJobs(ctx, 10)
		if err != nil || len(dead) != 3 {
			t.Fatalf("dead jobs = %+v, %v; want the confirmation and its two releases", dead, err)
		}
		for _, j := range dead[1:] {
			if j.Kind != ledger.JobReleaseInventory || j.Attempts != 0 || !strings.HasPrefix(j.LastError, "held:") {
				t.Fatalf("held release = %+v", j)
			}
		}
		if _, err := q.Replay(ctx, dead[1].ID, "ops:alice"); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("replay of a held release alone: err = %v, want ErrConflict", err)
		}
		back, err := q.Replay(ctx, confirm.ID, "ops:alice")
		if err != nil {
			t.Fatal(err)
		}
		if h := back.History; back.State != ledger.JobPending || len(h) != 3 || h[2].Outcome != retry.OutcomeReplayed || h[2].Worker != "ops:alice" {
			t.Fatalf("replayed job = %+v, want PENDING with a replayed row by ops:alice", back)
		}
		replayed := claimKinds(t, q, "w-a")
		if len(replayed) != 1 || replayed["confirm:ob-o6"].Attempt != 3 {
			t.Fatalf("claim after replay = %v, want only the confirmation, attempt 3", replayed)
		}
		settle(retry.Attempt{Number: 3, Outcome: retry.OutcomeDone}, q.Complete)
		if last := claimKinds(t, q, "w-b"); len(last) != 2 || last["release:ob-r6"].ID == 0 || last["release:ob-r9"].ID == 0 {
			t.Fatalf("claim after the confirmation = %v, want both its releases", last)
		}
	})
}

// claimKinds claims every due job and returns them by key.
func claimKinds(t *testing.T, q *ledger.Outbox, worker string) map[string]retry.Job {
	t.Helper()
	jobs, err := q.Claim(context.Background(), worker, 10, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]retry.Job{}
	for _, j := range jobs {
		out[j.Key] = j
	}
	return out
}

func forceDue(t *testing.T, s *ledger.Store, id uint64) {
	t.Helper()
	if err := s.MakeDue(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// TestExpiredLeasesAreNotStarvedByABacklog: a crashed worker's job (its
// lease run out) is claimed even while older pending jobs fill every batch.
func TestExpiredLeasesAreNotStarvedByABacklog(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("ob-n8", "ob-o8", "ob-tx8", 100)); err != nil {
			t.Fatal(err)
		}
		q := s.Outbox()
		crashed, err := q.Claim(ctx, "w-crashed", 1, time.Millisecond)
		if err != nil || len(crashed) != 1 {
			t.Fatalf("claim = %+v, %v", crashed, err)
		}
		if err := s.InsertDueJobs(ctx, "backlog", 40); err != nil { // due a minute ago: older than the lease
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		got := claimKinds(t, q, "w-b")
		if len(got) != 10 || got["confirm:ob-o8"].ID != crashed[0].ID {
			t.Fatalf("claimed %d jobs without the crashed worker's (%d)", len(got), crashed[0].ID)
		}
	})
}

// TestDeadJobsListTheirLatestAttempts: a job that retried for a day has
// hundreds of attempts; the dead-letter list carries each dead job's last
// DeadHistory of them (in order), while the job's own list keeps all.
func TestDeadJobsListTheirLatestAttempts(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("ob-n30", "ob-o30", "ob-tx30", 100)); err != nil {
			t.Fatal(err)
		}
		q := s.Outbox()
		job := claimKinds(t, q, "w-a")["confirm:ob-o30"]
		now := time.Now().UTC()
		const tries = ledger.DeadHistory + 5
		for n := 1; n <= tries; n++ {
			a := retry.Attempt{JobID: job.ID, Number: n, Worker: "w-a", StartedAt: now, FinishedAt: now, Err: fmt.Sprintf("try %d", n)}
			if n < tries {
				a.Outcome, a.NextRunAt = retry.OutcomeRetry, now
				if err := q.Retry(ctx, a); err != nil {
					t.Fatal(err)
				}
				if again := claimKinds(t, q, "w-a"); again["confirm:ob-o30"].ID != job.ID {
					t.Fatalf("claim %d: %v", n, again)
				}
				continue
			}
			a.Outcome = retry.OutcomeDead
			if err := q.Dead(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		dead, err := q.DeadJobs(ctx, 10)
		if err != nil || len(dead) != 1 {
			t.Fatalf("dead jobs: %+v, %v", dead, err)
		}
		h := dead[0].History
		if len(h) != ledger.DeadHistory || h[0].Number != tries-ledger.DeadHistory+1 || h[len(h)-1].Number != tries ||
			dead[0].Attempts != tries {
			t.Fatalf("dead job lists %d attempts (%d..%d) of %d; want the last %d in order",
				len(h), h[0].Number, h[len(h)-1].Number, dead[0].Attempts, ledger.DeadHistory)
		}
		all, err := q.JobsOf(ctx, "ob-o30")
		if err != nil || len(all) != 1 || len(all[0].History) != tries {
			t.Fatalf("jobs of the order: %+v, %v; want all %d attempts", all, err, tries)
		}
	})
}

// TestReleaseWaitsForALockedConfirm (MySQL): while another claim holds
// the order's confirmation row locked, a claim skips that row (SKIP
// LOCKED) but must still hold the release back: the subquery that looks
// for an unfinished confirmation must not skip the locked row too.
func TestReleaseWaitsForALockedConfirm(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		if s.Dialect() != migrations.MySQL {
			t.Skip("SQLite has no row locks: one writer at a time")
		}
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("lk-n1", "lk-o1", "lk-tx1", 100)); err != nil {
			t.Fatal(err)
		}
		if err := s.RefundSucceeded(ctx, "lk-r1", "lk-o1", 100); err != nil {
			t.Fatal(err)
		}
		tx := s.DB().Begin()
		defer tx.Rollback()
		var id uint64
		if err := tx.Raw("SELECT id FROM outbox_jobs WHERE job_key = ? FOR UPDATE", "confirm:lk-o1").Scan(&id).Error; err != nil || id == 0 {
			t.Fatalf("lock the confirmation: id %d, %v", id, err)
		}
		if got := claimKinds(t, s.Outbox(), "w-b"); len(got) != 0 {
			t.Fatalf("claimed %v while the confirmation is locked by another claim, want nothing", got)
		}
	})
}
