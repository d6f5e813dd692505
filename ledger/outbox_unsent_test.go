package ledger_test

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

// TestOutboxCountsUnsentAttempts: a job is MaybeSent on a claim only when
// an earlier attempt may have reached the other side. Attempts stored as
// unsent do not count; one whose worker lost its lease (nothing stored
// for the job) counts, and so does one stored late by that worker, even
// as unsent; a given-back claim (never attempted) does not.
func TestOutboxCountsUnsentAttempts(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("us-n1", "us-o1", "us-tx1", 100)); err != nil {
			t.Fatal(err)
		}
		clock := time.Now().UTC()
		q := s.WithClock(func() time.Time { return clock }).Outbox()
		claim := func(worker string, attempt int, maybeSent bool) retry.Job {
			t.Helper()
			jobs, err := q.Claim(ctx, worker, 10, time.Minute)
			if err != nil || len(jobs) != 1 || jobs[0].Attempt != attempt || jobs[0].MaybeSent != maybeSent {
				t.Fatalf("claim by %s = %+v, err %v; want attempt %d, MaybeSent %v", worker, jobs, err, attempt, maybeSent)
			}
			return jobs[0]
		}
		retryAt := func(j retry.Job, worker string, unsent bool) error {
			clock = clock.Add(time.Second)
			return q.Retry(ctx, retry.Attempt{JobID: j.ID, Number: j.Attempt, Worker: worker, Outcome: retry.OutcomeRetry,
				Err: "x", StartedAt: clock, FinishedAt: clock, NextRunAt: clock, Unsent: unsent})
		}
		j := claim("w-a", 1, false)
		if err := q.Release(ctx, j, "w-a"); err != nil { // given back unstarted
			t.Fatal(err)
		}
		j = claim("w-a", 1, false)
		if err := retryAt(j, "w-a", true); err != nil {
			t.Fatal(err)
		}
		j = claim("w-a", 2, false) // attempt 1 sent nothing
		if err := retryAt(j, "w-a", true); err != nil {
			t.Fatal(err)
		}
		j = claim("w-a", 3, false)
		clock = clock.Add(2 * time.Minute) // w-a's lease runs out
		b := claim("w-b", 4, true)         // attempt 3 may have sent
		if err := retryAt(j, "w-a", true); !errors.Is(err, retry.ErrLeaseLost) {
			t.Fatalf("late settle: %v, want ErrLeaseLost", err)
		}
		if err := retryAt(b, "w-b", true); err != nil {
			t.Fatal(err)
		}
		claim("w-b", 5, true) // attempt 3 still counts: its worker did not hold the job when it stored it
		got, err := q.Job(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.MaybeSent || len(got.History) != 4 || !got.History[0].Unsent || !got.History[2].Unsent {
			t.Fatalf("job %+v; want maybe sent, four attempts stored unsent", got)
		}
	})
}

// TestOutsideRefundHoldsAConfirmationNeverSent: WeChat Pay's word of a
// refund outside the gateway holds a pending confirmation whose attempts
// all sent nothing, as one never attempted, saying it was never sent (one
// an attempt may have sent is only flagged: TestRefundNoticeAfterPaymentHoldsConfirmation).
func TestOutsideRefundHoldsAConfirmationNeverSent(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "or-unsent"
		orPay(t, s, no)
		q := s.Outbox()
		c, ok := claimKinds(t, q, "w-a")["confirm:"+no]
		if !ok {
			t.Fatalf("no claim of %s", no)
		}
		now := time.Now().UTC()
		if err := q.Retry(ctx, retry.Attempt{JobID: c.ID, Number: 1, Worker: "w-a", Outcome: retry.OutcomeRetry,
			Err: "query failed", StartedAt: now, FinishedAt: now, NextRunAt: now, Unsent: true}); err != nil {
			t.Fatal(err)
		}
		reportRefundFirst(t, s, rfRefundNotice(no, "out-"+no, ledger.RefundSuccess))
		assertHeldAfter(t, s, no, "out-"+no, 1)
		if got := orConfirmation(t, s, no); got.MaybeSent || strings.Contains(got.LastError, "may have") {
			t.Fatalf("held confirmation %+v; want it never sent, saying so", got)
		}
	})
}
