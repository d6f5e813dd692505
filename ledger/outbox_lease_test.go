package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/retry"
)

// ticking is a clock that moves on a millisecond at every reading (and by
// hand with skip): each change the outbox makes is at a time of its own.
type ticking struct{ t time.Time }

func (c *ticking) now() time.Time       { c.t = c.t.Add(time.Millisecond); return c.t }
func (c *ticking) skip(d time.Duration) { c.t = c.t.Add(d) }

// TestStaleAttemptChangesNoClaimButItsOwn: an attempt is stored against
// the claim it ran under, never against a later claim of the same job.
// Worker A's confirmation attempt is stored late (a database stall past
// its lease) after B claimed the job again: A's dead letter must find its
// lease lost and hold nothing: B may yet confirm the stock, and the
// order's release, held dead behind a confirmation that then ends DONE,
// would wait for a person though nothing holds it back any more. Nor
// does a worker's late outcome, or give-back, for an earlier claim of its
// own change its current claim.
func TestStaleAttemptChangesNoClaimButItsOwn(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		clock := &ticking{t: time.Now().UTC()}
		s = s.WithClock(clock.now)
		q := s.Outbox()
		late := func(j retry.Job, worker string, o retry.Outcome) retry.Attempt {
			now := clock.now()
			return retry.Attempt{JobID: j.ID, Number: j.Attempt, Worker: worker, Outcome: o, Err: "late",
				StartedAt: now, FinishedAt: now, NextRunAt: now.Add(time.Hour)}
		}
		state := func(id uint64) *ledger.OutboxJob {
			t.Helper()
			j, err := q.Job(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return j
		}

		// One worker, two claims of the same job.
		if _, err := s.ApplyTransaction(ctx, paid("ls-n1", "ls-o1", "ls-tx1", 100)); err != nil {
			t.Fatal(err)
		}
		first := claimKinds(t, q, "w-a")["confirm:ls-o1"]
		clock.skip(2 * time.Hour) // past claimKinds' hour-long lease
		again := claimKinds(t, q, "w-a")["confirm:ls-o1"]
		if first.ID == 0 || again.ID != first.ID || again.Attempt != 2 {
			t.Fatalf("claims %+v then %+v; want the same job, attempts 1 and 2", first, again)
		}
		if err := q.Release(ctx, first, "w-a"); err != nil {
			t.Fatal(err)
		}
		if err := q.Complete(ctx, late(first, "w-a", retry.OutcomeDone)); !errors.Is(err, retry.ErrLeaseLost) {
			t.Fatalf("attempt 1 stored under claim 2: err = %v, want ErrLeaseLost", err)
		}
		if j := state(first.ID); j.State != ledger.JobRunning || j.Attempts != 2 {
			t.Fatalf("after the first claim's late release and outcome: %s, %d attempts; want RUNNING, 2 (claim 2 untouched)",
				j.State, j.Attempts)
		}
		if err := q.Complete(ctx, late(again, "w-a", retry.OutcomeDone)); err != nil {
			t.Fatal(err)
		}

		// Two workers: A's outcome comes after B claimed the job.
		if _, err := s.ApplyTransaction(ctx, paid("ls-n2", "ls-o2", "ls-tx2", 100)); err != nil {
			t.Fatal(err)
		}
		a := claimKinds(t, q, "w-a")["confirm:ls-o2"]
		clock.skip(2 * time.Hour)
		b := claimKinds(t, q, "w-b")["confirm:ls-o2"]
		if a.ID == 0 || b.ID != a.ID || b.Attempt != 2 {
			t.Fatalf("claims %+v then %+v; want one job, attempts 1 and 2", a, b)
		}
		if err := s.RefundSucceeded(ctx, "ls-r2", "ls-o2", 100); err != nil {
			t.Fatal(err)
		}
		if err := q.Dead(ctx, late(a, "w-a", retry.OutcomeDead)); !errors.Is(err, retry.ErrLeaseLost) {
			t.Fatalf("A's late dead letter: err = %v, want ErrLeaseLost", err)
		}
		if err := q.Retry(ctx, late(a, "w-a", retry.OutcomeRetry)); !errors.Is(err, retry.ErrLeaseLost) {
			t.Fatalf("A's late retry: err = %v, want ErrLeaseLost", err)
		}
		jobs, err := q.JobsOf(ctx, "ls-o2")
		if err != nil || len(jobs) != 2 {
			t.Fatalf("jobs of ls-o2: %+v, %v", jobs, err)
		}
		if cf, rel := jobs[0], jobs[1]; cf.State != ledger.JobRunning || rel.State != ledger.JobPending {
			t.Fatalf("after A's late outcomes: confirmation %s (%q), release %s (%q); want B's claim RUNNING and "+
				"the release PENDING behind it", cf.State, cf.LastError, rel.State, rel.LastError)
		}
		if err := q.Complete(ctx, late(b, "w-b", retry.OutcomeDone)); err != nil {
			t.Fatalf("B's outcome: %v", err)
		}
		if got := claimKinds(t, q, "w-c"); got["release:ls-r2"].ID == 0 {
			t.Fatalf("claim after B confirmed the stock = %v, want the release", got)
		}
	})
}

// TestJobVersionChangesWithEveryChange: a job's version (what a person
// replays on, If-Match) is new after each change to its row: claimed,
// rescheduled, dead, held, replayed. A person who looked at the
// confirmation while it ran cannot replay its death unseen.
func TestJobVersionChangesWithEveryChange(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		clock := &ticking{t: time.Now().UTC()}
		s = s.WithClock(clock.now)
		q := s.Outbox()
		if _, err := s.ApplyTransaction(ctx, paid("lv-n1", "lv-o1", "lv-tx1", 100)); err != nil {
			t.Fatal(err)
		}
		if err := s.RefundSucceeded(ctx, "lv-r1", "lv-o1", 100); err != nil { // its release waits behind the confirmation
			t.Fatal(err)
		}
		seen := map[string]string{} // key and version: what the job was then
		look := func(key, what string) *ledger.OutboxJob {
			t.Helper()
			jobs, err := q.JobsOf(ctx, "lv-o1")
			if err != nil {
				t.Fatal(err)
			}
			for i := range jobs {
				if j := &jobs[i]; j.Key == key {
					if before, ok := seen[key+" "+j.Version]; ok {
						t.Fatalf("%s %s: version %s, as when %s", key, what, j.Version, before)
					}
					seen[key+" "+j.Version] = what
					return j
				}
			}
			t.Fatalf("no job %s", key)
			return nil
		}
		look("confirm:lv-o1", "pending")
		look("release:lv-r1", "pending")
		c := claimKinds(t, q, "w-a")["confirm:lv-o1"]
		look("confirm:lv-o1", "claimed")
		now := clock.now()
		if err := q.Retry(ctx, retry.Attempt{JobID: c.ID, Number: c.Attempt, Worker: "w-a", Outcome: retry.OutcomeRetry,
			Err: "503", StartedAt: now, FinishedAt: now, NextRunAt: now}); err != nil {
			t.Fatal(err)
		}
		look("confirm:lv-o1", "rescheduled")
		c = claimKinds(t, q, "w-a")["confirm:lv-o1"]
		running := look("confirm:lv-o1", "claimed again")
		now = clock.now()
		if err := q.Dead(ctx, retry.Attempt{JobID: c.ID, Number: c.Attempt, Worker: "w-a", Outcome: retry.OutcomeDead,
			Err: "422", StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatal(err)
		}
		dead := look("confirm:lv-o1", "dead")
		look("release:lv-r1", "held")
		if _, err := q.ReplayIf(ctx, c.ID, "ops:alice", []string{running.Version}); !errors.Is(err, ledger.ErrStale) {
			t.Fatalf("replay on the version seen while it ran: err = %v, want ErrStale (it died since, of %q)", err, dead.LastError)
		}
		if _, err := q.ReplayIf(ctx, c.ID, "ops:alice", []string{dead.Version}); err != nil {
			t.Fatal(err)
		}
		look("confirm:lv-o1", "replayed")
		look("release:lv-r1", "revived")
	})
}

// TestReplayGivesBackTheElapsedBudget: a confirmation that died after
// retrying for max_elapsed and is replayed starts a new budget: its next
// claim's first attempt is that claim, so one more 503 reschedules it
// instead of killing it at once (and holding its order's releases again).
func TestReplayGivesBackTheElapsedBudget(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		clock := &ticking{t: time.Now().UTC()}
		q, c := killConfirmation(t, s.WithClock(clock.now), "lb-o1")
		if c.FirstAttemptAt.IsZero() {
			t.Fatalf("claimed job %+v without its first attempt", c)
		}
		clock.skip(48 * time.Hour) // a person replays it two days later
		job, err := q.Replay(ctx, c.ID, "ops:alice")
		if err != nil {
			t.Fatal(err)
		}
		if job.FirstAttemptAt != nil {
			t.Fatalf("replayed job keeps first_attempt_at %v", job.FirstAttemptAt)
		}
		again := claimKinds(t, q, "w-b")["confirm:lb-o1"]
		if again.ID != c.ID || again.FirstAttemptAt.Sub(c.FirstAttemptAt) < 48*time.Hour {
			t.Fatalf("claim after the replay: first attempt %v (was %v); want the new claim's time",
				again.FirstAttemptAt, c.FirstAttemptAt)
		}
	})
}
