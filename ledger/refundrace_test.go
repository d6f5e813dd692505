package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/retry"
)

// TestPaymentWaitsForAnUncommittedRefundFlag: a refund notice's
// transaction has written its UNKNOWN_REFUND flag and not committed; a
// payment of the same order recorded meanwhile (another instance) waits
// for it instead of missing it, and holds its confirmation.
func TestPaymentWaitsForAnUncommittedRefundFlag(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	db, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	const no = "race-1"
	refundTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := refundTx.ExecContext(ctx, `INSERT INTO anomalies (kind, ref, out_trade_no, detail, first_seen, last_seen)
		VALUES (?, ?, ?, 'x', ?, ?)`, ledger.AnomalyUnknownRefund, "out-"+no+":SUCCESS", no, now, now); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.ApplyTransaction(ctx, rfPayment(no)); done <- err }()
	select {
	case err := <-done:
		_ = refundTx.Rollback()
		t.Fatalf("the payment committed (err %v) past a refund flag not yet committed: %s", err, rfState(t, s, no))
	case <-time.After(300 * time.Millisecond):
	}
	if err := refundTx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := rfState(t, s, no), heldState(no, "out-"+no); got != want {
		t.Fatalf("ledger: %s, want %s", got, want)
	}
}

// TestPaymentAndOutsideRefundAtOnce: a payment and the REFUND.SUCCESS
// notice of a refund made outside the gateway, recorded at the same time
// (two instances), always end with the confirmation held and one
// REFUNDED_OUTSIDE flag, whichever commits first.
func TestPaymentAndOutsideRefundAtOnce(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 20 {
			no := fmt.Sprintf("race-%d", i)
			wg.Add(2)
			go func() {
				defer wg.Done()
				if _, err := s.ApplyTransaction(ctx, rfPayment(no)); err != nil {
					errs <- fmt.Errorf("pay %s: %w", no, err)
				}
			}()
			go func() {
				defer wg.Done()
				_, err := s.ApplyRefund(ctx, rfRefundNotice(no, "out-"+no, ledger.RefundSuccess))
				if err != nil && !errors.Is(err, ledger.ErrNotFound) {
					errs <- fmt.Errorf("refund notice %s: %w", no, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for i := range 20 {
			no := fmt.Sprintf("race-%d", i)
			if got, want := rfState(t, s, no), heldState(no, "out-"+no); got != want {
				t.Errorf("%s: %s, want %s", no, got, want)
			}
		}
	})
}

// TestBatchSeesARefundFlagWrittenMeanwhile: an outside refund's notice
// recorded while a group-committed batch has decided on a new order but
// not yet inserted it (no payment row for the notice to find) is still
// seen: the batch reads the flags after inserting, falls back, and the
// order's confirmation is held.
func TestBatchSeesARefundFlagWrittenMeanwhile(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sc := s.WithClock(func() time.Time {
		pc := make([]uintptr, 20)
		n := runtime.Callers(2, pc)
		frames := runtime.CallersFrames(pc[:n])
		for {
			f, more := frames.Next()
			if strings.HasSuffix(f.Function, "ledger.(*Store).decide") {
				once.Do(func() { close(paused); <-resume })
				break
			}
			if !more {
				break
			}
		}
		return time.Now()
	})
	done := make(chan []error, 1)
	go func() {
		errs, batched := sc.ApplyTransactions(ctx, []ledger.TransactionUpdate{rfPayment("bx-1"), rfPayment("bx-2")})
		t.Logf("batched=%v", batched)
		done <- errs
	}()
	<-paused // the batch has run refundFirst (nothing yet), not yet inserted bx-1
	_, err := s.ApplyRefund(ctx, rfRefundNotice("bx-1", "out-bx-1", ledger.RefundSuccess))
	t.Logf("refund notice: %v", err)
	close(resume)
	if errs := <-done; errs[0] != nil || errs[1] != nil {
		t.Fatalf("batch: %v", errs)
	}
	if got, want := rfState(t, s, "bx-1"), heldState("bx-1", "out-bx-1"); got != want {
		t.Fatalf("outside refund recorded while the batch ran:\n got %s\nwant %s", got, want)
	}
}

// pauseIn returns a copy of s whose clock blocks (once) when called from
// a function whose name ends in fn, until resume is closed.
func pauseIn(s *ledger.Store, fn string) (*ledger.Store, chan struct{}, chan struct{}) {
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sc := s.WithClock(func() time.Time {
		pc := make([]uintptr, 30)
		n := runtime.Callers(2, pc)
		frames := runtime.CallersFrames(pc[:n])
		for {
			f, more := frames.Next()
			if strings.HasSuffix(f.Function, fn) {
				once.Do(func() { close(paused); <-resume })
				break
			}
			if !more {
				break
			}
		}
		return time.Now()
	})
	return sc, paused, resume
}

// TestDeathDuringAnOutsideNoticeSaysHeld: a confirmation attempt dies (an
// inventory refusal) while the REFUND.SUCCESS notice of an outside refund,
// which found the job claimed, is being stored: the dead letter still says
// held (the settle waits for the notice's lock and then sees its flag).
func TestDeathDuringAnOutsideNoticeSaysHeld(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	const no = "rv-dead"
	orPay(t, s, no)
	q := s.Outbox()
	claimed, err := q.Claim(ctx, "w-a", 10, time.Hour)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	c := claimed[0]
	sc, paused, resume := pauseIn(s, "ledger.(*Store).flagUnheld")
	noticed := make(chan error, 1)
	go func() {
		_, err := sc.ApplyRefund(ctx, rfRefundNotice(no, "out-"+no, ledger.RefundSuccess))
		noticed <- err
	}()
	select {
	case <-paused: // the notice found the job RUNNING, REFUNDED_OUTSIDE not yet written
	case err := <-noticed:
		t.Fatalf("notice finished without reaching flagUnheld: %v", err)
	}
	now := time.Now().UTC()
	died := make(chan error, 1)
	go func() {
		died <- q.Dead(ctx, retry.Attempt{JobID: c.ID, Number: 1, Worker: "w-a", Outcome: retry.OutcomeDead,
			Err: "inventory refused: 422 SKU_UNKNOWN", StartedAt: now, FinishedAt: now})
	}()
	var derr error
	select {
	case derr = <-died:
		close(resume)
	case <-time.After(time.Second):
		close(resume)
		derr = <-died
	}
	if err := <-noticed; !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("notice: %v", err)
	}
	if derr != nil {
		t.Fatalf("dead settle: %v", derr)
	}
	job := orConfirmation(t, s, no)
	if !strings.HasPrefix(job.LastError, "held:") || !strings.Contains(job.LastError, "SKU_UNKNOWN") {
		t.Fatalf("confirmation dead while an outside refund's notice was stored: last_error %q (%s); want held, "+
			"with why it died, so that a replay is a person's informed choice", job.LastError, rfState(t, s, no))
	}
}
