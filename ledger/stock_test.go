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

// TestRefundedInFull: only refunds that succeeded count, summed over the
// order's refunds; one still under way may yet fail.
func TestRefundedInFull(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		check := func(no string, want bool) {
			t.Helper()
			got, err := s.RefundedInFull(ctx, no)
			if err != nil || got != want {
				t.Fatalf("RefundedInFull(%s) = %v, %v; want %v", no, got, err, want)
			}
		}
		paidOrder(t, s, "rif-1", 100)
		check("rif-1", false)
		check("rif-unknown", false)
		for _, r := range []struct {
			no     string
			amount int64
			to     []ledger.RefundState
		}{{"rif-r1", 60, []ledger.RefundState{ledger.RefundProcessing, ledger.RefundSuccess}},
			{"rif-r2", 40, []ledger.RefundState{ledger.RefundProcessing}}} {
			if _, err := s.CreateRefund(ctx, refundReq("rif-1", r.no, r.amount)); err != nil {
				t.Fatal(err)
			}
			for _, to := range r.to {
				if _, err := move(t, s, r.no, to); err != nil {
					t.Fatal(err)
				}
			}
		}
		check("rif-1", false) // 60 done, 40 under way: all reserved, not all back
		if _, err := move(t, s, "rif-r2", ledger.RefundSuccess); err != nil {
			t.Fatal(err)
		}
		check("rif-1", true)
	})
}

// TestStaleSkipDoesNotCount: a worker whose lease ran out stores its
// skipped attempt, but the job was settled by the worker that sent the
// confirmation: the order's releases must run.
func TestStaleSkipDoesNotCount(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidOrder(t, s, "stale-1", 100)
		clock := time.Now().UTC()
		q := s.WithClock(func() time.Time { return clock }).Outbox()
		a, err := q.Claim(ctx, "w-a", 10, time.Minute)
		if err != nil || len(a) != 1 {
			t.Fatalf("claim a = %+v, %v", a, err)
		}
		clock = clock.Add(time.Minute + time.Second) // A's lease runs out during its attempt
		b, err := q.Claim(ctx, "w-b", 10, time.Minute)
		if err != nil || len(b) != 1 || b[0].ID != a[0].ID {
			t.Fatalf("claim b = %+v, %v", b, err)
		}
		now := time.Now().UTC()
		if err := q.Complete(ctx, retry.Attempt{JobID: b[0].ID, Number: b[0].Attempt, Worker: "w-b",
			Outcome: retry.OutcomeDone, StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatal(err)
		}
		err = q.Complete(ctx, retry.Attempt{JobID: a[0].ID, Number: a[0].Attempt, Worker: "w-a",
			Outcome: retry.OutcomeSkipped, Err: "skipped: refunded in full", StartedAt: now, FinishedAt: now})
		if !errors.Is(err, retry.ErrLeaseLost) {
			t.Fatalf("stale skip: %v, want ErrLeaseLost", err)
		}
		if skipped, err := s.ConfirmationSkipped(ctx, "stale-1"); err != nil || skipped {
			t.Fatalf("ConfirmationSkipped = %v, %v after a sent confirmation settled the job; want false", skipped, err)
		}
	})
}
