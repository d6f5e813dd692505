package ledger_test

// A job that enters DEAD at creation (held for a person) gets its
// outbox_attempts row, as every other way a job becomes DEAD
// (settle, holdReleases, holdRefundedAfter) appends one.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/retry"
)

// TestReleaseStoredHeldHasHistory: a refund succeeds while its order's
// confirmation is DEAD; its release is stored DEAD ("held: …") at once,
// with a "dead" history row, as a release held a moment earlier
// (holdReleases) gets.
func TestReleaseStoredHeldHasHistory(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		q, _ := killConfirmation(t, s, "ho-o1")
		if err := s.RefundSucceeded(ctx, "ho-r1", "ho-o1", 40); err != nil {
			t.Fatal(err)
		}
		jobs, err := q.JobsOf(ctx, "ho-o1")
		if err != nil || len(jobs) != 2 || jobs[1].Kind != ledger.JobReleaseInventory || jobs[1].State != ledger.JobDead {
			t.Fatalf("jobs = %+v, %v; want the dead confirmation and a held release", jobs, err)
		}
		if h := jobs[1].History; len(h) != 1 || h[0].Outcome != retry.OutcomeDead {
			t.Errorf("release stored DEAD (%q) has history %+v; want one dead row, as holdReleases writes", jobs[1].LastError, h)
		}
	})
}

// TestConfirmationStoredHeldHasHistory: WeChat Pay's REFUND.SUCCESS
// notice comes before the payment; the payment's confirmation is stored
// DEAD (held: REFUNDED_OUTSIDE) with a "dead" history row, as the same
// hold applied to an existing PENDING job (holdRefundedAfter) writes.
func TestConfirmationStoredHeldHasHistory(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		reportRefundFirst(t, s, rfRefundNotice("ho-o2", "out-ho-o2", ledger.RefundSuccess))
		if _, err := s.ApplyTransaction(ctx, rfPayment("ho-o2")); err != nil {
			t.Fatal(err)
		}
		c := orConfirmation(t, s, "ho-o2")
		if c.State != ledger.JobDead {
			t.Fatalf("confirmation = %+v, want held DEAD", c)
		}
		if h := c.History; len(h) != 1 || h[0].Outcome != retry.OutcomeDead {
			t.Errorf("confirmation stored DEAD (%q) has history %+v; want one dead row, as holdRefundedAfter writes", c.LastError, h)
		}
	})
}

// TestReplayKeepsWhoReplayedItWhole: the history row of a replay names
// who did it, "<role>:<key name>" with a key name of up to 64 characters,
// whole (migration 0055 widened the column past a worker id's 64).
func TestReplayKeepsWhoReplayedItWhole(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		q, c := killConfirmation(t, s, "ho-o3")
		by := "finance:" + strings.Repeat("k", 64)
		job, err := q.Replay(ctx, c.ID, by)
		if err != nil {
			t.Fatal(err)
		}
		if h := job.History; len(h) != 2 || h[1].Outcome != retry.OutcomeReplayed || h[1].Worker != by {
			t.Fatalf("history %+v, want the replay by %s", h, by)
		}
	})
}

// killConfirmation pays order no 100 fen and lets its stock confirmation
// die (a worker's dead outcome); it returns the queue and the job.
func killConfirmation(t *testing.T, s *ledger.Store, no string) (*ledger.Outbox, retry.Job) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.ApplyTransaction(ctx, paid("n-"+no, no, "tx-"+no, 100)); err != nil {
		t.Fatal(err)
	}
	q := s.Outbox()
	c := claimKinds(t, q, "w-a")["confirm:"+no]
	now := time.Now().UTC()
	if err := q.Dead(ctx, retry.Attempt{JobID: c.ID, Number: c.Attempt, Worker: "w-a", Outcome: retry.OutcomeDead,
		Err: "422", StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	return q, c
}

// TestReplayOfAStaleLook: a person looks at a dead confirmation (an
// inventory refusal); WeChat Pay then reports its order refunded outside
// the gateway, and the dead job says held. A replay on the version the
// person saw is refused (ErrStale) and changes nothing: replaying it
// would send the stock of a refunded order. So is one decided before a
// second refund outside the gateway. On the version they see now it is
// replayed.
func TestReplayOfAStaleLook(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		q, c := killConfirmation(t, s, "ho-o4")
		looked, err := q.Job(ctx, c.ID)
		if err != nil || looked.Version == "" {
			t.Fatalf("dead job %+v, %v; want a version", looked, err)
		}
		reportRefundFirst(t, s, rfRefundNotice("ho-o4", "out-ho-o4", ledger.RefundSuccess))
		held, err := q.Job(ctx, c.ID)
		if err != nil || held.State != ledger.JobDead || !strings.HasPrefix(held.LastError, heldOutsidePrefix) || held.Version == looked.Version {
			t.Fatalf("after the refund outside: %+v, %v; want it held, at a new version (was %s)", held, err, looked.Version)
		}
		job, err := q.ReplayIf(ctx, c.ID, "ops:alice", []string{looked.Version})
		if !errors.Is(err, ledger.ErrStale) || job == nil || job.State != ledger.JobDead || job.Version != held.Version ||
			len(job.History) != len(held.History) {
			t.Fatalf("replay on the old version: %+v, %v; want ErrStale and the job unchanged", job, err)
		}
		// A second refund outside the gateway: the job was held for one
		// already, and says so again, at a new version.
		reportRefundFirst(t, s, rfRefundNotice("ho-o4", "out-ho-o4-2", ledger.RefundSuccess))
		again, err := q.Job(ctx, c.ID)
		if err != nil || again.State != ledger.JobDead || again.Version == held.Version || len(again.History) != len(held.History)+1 ||
			!strings.Contains(again.History[len(again.History)-1].Err, "out-ho-o4-2") {
			t.Fatalf("after a second refund outside: %+v, %v; want it held again at a new version, with a history row", again, err)
		}
		// The same refund reported again (another notice, a query): nothing new.
		repeat := rfRefundNotice("ho-o4", "out-ho-o4-2", ledger.RefundSuccess)
		repeat.Ref, repeat.Notice.NotifyID = "query:out-ho-o4-2", "query:out-ho-o4-2"
		reportRefundFirst(t, s, repeat)
		if j, _ := q.Job(ctx, c.ID); j.Version != again.Version || len(j.History) != len(again.History) {
			t.Fatalf("after the second refund reported again: %+v; want the job as it was", j)
		}
		if _, err := q.ReplayIf(ctx, c.ID, "ops:alice", []string{held.Version}); !errors.Is(err, ledger.ErrStale) {
			t.Fatalf("replay on the version before the second refund: %v, want ErrStale", err)
		}
		job, err = q.ReplayIf(ctx, c.ID, "ops:alice", []string{again.Version})
		if err != nil || job.State != ledger.JobPending || job.Version == again.Version {
			t.Fatalf("replay on the version seen now: %+v, %v; want it PENDING at a new version", job, err)
		}
	})
}

// TestReplayOfAReleaseBehindItsConfirmation: a release held behind its
// order's dead confirmation is refused with ErrReleaseWaits (an
// ErrConflict), and stays DEAD; once the confirmation is replayed it
// runs behind it, and a replay of it then is refused as not DEAD, which
// is not ErrReleaseWaits: the caller tells a person which to replay.
func TestReplayOfAReleaseBehindItsConfirmation(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		q, c := killConfirmation(t, s, "ho-o4")
		if err := s.RefundSucceeded(ctx, "ho-r4", "ho-o4", 40); err != nil {
			t.Fatal(err)
		}
		jobs, err := q.JobsOf(ctx, "ho-o4")
		if err != nil || len(jobs) != 2 || jobs[1].State != ledger.JobDead {
			t.Fatalf("jobs = %+v, %v; want the dead confirmation and a held release", jobs, err)
		}
		release := jobs[1]
		job, err := q.ReplayIf(ctx, release.ID, "ops:alice", nil)
		if !errors.Is(err, ledger.ErrReleaseWaits) || !errors.Is(err, ledger.ErrConflict) || job == nil || job.State != ledger.JobDead {
			t.Fatalf("replay of the held release = %+v, %v; want it DEAD and ErrReleaseWaits", job, err)
		}
		if _, err := q.ReplayIf(ctx, c.ID, "ops:alice", nil); err != nil {
			t.Fatal(err)
		}
		job, err = q.ReplayIf(ctx, release.ID, "ops:alice", nil)
		if !errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrReleaseWaits) || job == nil || job.State != ledger.JobPending {
			t.Fatalf("replay of the revived release = %+v, %v; want it PENDING and a plain ErrConflict", job, err)
		}
	})
}
