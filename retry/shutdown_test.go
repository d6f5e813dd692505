package retry_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/retry"
)

// TestShutdownFinishesAttemptAndReleasesTheRest: the pool is stopped while
// its first job is being handled; that attempt completes and is stored,
// and the other claimed jobs go back to PENDING without an attempt.
func TestShutdownFinishesAttemptAndReleasesTheRest(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		payOrders(t, s) // each one's stock confirmation is a job
		runCtx, stop := context.WithCancel(ctx)
		var handled, pendingMidAttempt atomic.Int32
		h := retry.HandlerFunc(func(hctx context.Context, job retry.Job) error {
			handled.Add(1)
			stop() // shutdown begins mid-attempt
			// The jobs not started are given back while this attempt runs.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if n := pendingJobs(t, s, job.OutTradeNo); n == 2 {
					pendingMidAttempt.Store(int32(n))
					break
				}
			}
			return nil
		})
		pool := retry.NewPool(retry.PoolConfig{Workers: 1, Batch: 10, Poll: 10 * time.Millisecond,
			Lease: time.Minute, Name: "sd"}, s.Outbox(), h)
		pool.Run(runCtx)
		if handled.Load() != 1 || pendingMidAttempt.Load() != 2 {
			t.Fatalf("handled %d jobs, %d given back during the attempt; want 1 and 2", handled.Load(), pendingMidAttempt.Load())
		}
		var done, pending int
		for _, no := range []string{"sd-1", "sd-2", "sd-3"} {
			jobs, err := s.Outbox().JobsOf(ctx, no)
			if err != nil || len(jobs) != 1 {
				t.Fatalf("jobs of %s: %+v %v", no, jobs, err)
			}
			switch j := jobs[0]; {
			case j.State == ledger.JobDone && j.Attempts == 1:
				done++
			case j.State == ledger.JobPending && j.Attempts == 0:
				pending++
			default:
				t.Errorf("job %s after shutdown: %+v", no, j)
			}
		}
		if done != 1 || pending != 2 {
			t.Fatalf("done=%d pending=%d, want 1 and 2", done, pending)
		}
	})
}

// payOrders records the shutdown tests' orders paid.
func payOrders(t *testing.T, s *ledger.Store) {
	t.Helper()
	for _, no := range []string{"sd-1", "sd-2", "sd-3"} {
		u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
			EventType: "TRANSACTION.SUCCESS", ResourceType: "encrypt-resource", OutTradeNo: no, Plaintext: "{}"},
			OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", AmountTotal: 100}
		if _, err := s.ApplyTransaction(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
}

// pendingJobs counts the PENDING jobs of the shutdown test's orders other
// than running.
func pendingJobs(t *testing.T, s *ledger.Store, running string) int {
	n := 0
	for _, no := range []string{"sd-1", "sd-2", "sd-3"} {
		jobs, err := s.Outbox().JobsOf(context.Background(), no)
		if err != nil {
			t.Error(err)
			return 0
		}
		if no != running && len(jobs) == 1 && jobs[0].State == ledger.JobPending {
			n++
		}
	}
	return n
}

// lateClaim is an outbox whose claims commit just as shutdown begins:
// the claim is stored, and its call returns only once runCtx ends, with
// whatever its own context says then.
type lateClaim struct {
	*ledger.Outbox
	runCtx context.Context
	stop   context.CancelFunc
}

func (q lateClaim) Claim(ctx context.Context, worker string, n int, lease time.Duration) ([]retry.Job, error) {
	jobs, err := q.Outbox.Claim(context.WithoutCancel(ctx), worker, n, lease)
	q.stop()
	<-q.runCtx.Done()
	if err == nil {
		err = ctx.Err()
	}
	return jobs, err
}

// TestClaimCutByShutdownIsGivenBack: a claim that committed as shutdown
// began is not cut off by it (its jobs would stay leased to a worker that
// is leaving, for the whole lease); the claimed jobs are given back.
func TestClaimCutByShutdownIsGivenBack(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		payOrders(t, s) // each one's stock confirmation is a job
		runCtx, stop := context.WithCancel(ctx)
		h := retry.HandlerFunc(func(context.Context, retry.Job) error {
			t.Error("a job was attempted after shutdown began")
			return nil
		})
		pool := retry.NewPool(retry.PoolConfig{Workers: 1, Batch: 10, Poll: 10 * time.Millisecond,
			Lease: time.Minute, Name: "sd"}, lateClaim{s.Outbox(), runCtx, stop}, h)
		pool.Run(runCtx)
		if n := pendingJobs(t, s, ""); n != 3 {
			t.Fatalf("%d of 3 claimed jobs PENDING after shutdown, want all (none left leased)", n)
		}
	})
}
