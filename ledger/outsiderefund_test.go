package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/migrations"
	"paygateway/retry"
)

// heldOutsidePrefix is how the last error of a confirmation held for a
// refund outside the gateway begins.
const heldOutsidePrefix = "held: WeChat Pay reports the order refunded outside the gateway"

// orPay records the payment of order no (transaction tx-<no>) and wants
// its confirmation PENDING.
func orPay(t *testing.T, s *ledger.Store, no string) {
	t.Helper()
	if _, err := s.ApplyTransaction(context.Background(), rfPayment(no)); err != nil {
		t.Fatalf("pay %s: %v", no, err)
	}
	if got := rfState(t, s, no); got != plainState() {
		t.Fatalf("%s paid: %s, want %s", no, got, plainState())
	}
}

// orConfirmation returns the order's confirmation job with its history.
func orConfirmation(t *testing.T, s *ledger.Store, no string) ledger.OutboxJob {
	t.Helper()
	jobs, err := s.Outbox().JobsOf(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Kind == ledger.JobConfirmInventory {
			return j
		}
	}
	t.Fatalf("%s has no confirmation in %+v", no, jobs)
	return ledger.OutboxJob{}
}

// assertHeldAfter wants the order's confirmation held for a refund
// outside the gateway, with a "dead" history row for the hold as its last
// (attempt: its attempt count), and REFUNDED_OUTSIDE naming the refund.
func assertHeldAfter(t *testing.T, s *ledger.Store, no, outRefundNo string, attempts int) {
	t.Helper()
	if got, want := rfState(t, s, no), heldState(no, outRefundNo); got != want {
		t.Fatalf("%s refunded outside the gateway after its payment:\n got %s\nwant %s", no, got, want)
	}
	c := orConfirmation(t, s, no)
	if !strings.HasPrefix(c.LastError, heldOutsidePrefix) || c.Attempts != attempts {
		t.Fatalf("%s: confirmation %+v, want last error %q…, %d attempts", no, c, heldOutsidePrefix, attempts)
	}
	if h := c.History; len(h) == 0 || h[len(h)-1].Outcome != retry.OutcomeDead || h[len(h)-1].Number != attempts ||
		!strings.HasPrefix(h[len(h)-1].Err, heldOutsidePrefix) {
		t.Fatalf("%s: confirmation history %+v, want the hold last (dead, attempt %d)", no, h, attempts)
	}
	assertRefundedFirstFlag(t, s, no, outRefundNo)
	as, err := s.Anomalies(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.Kind == ledger.AnomalyRefundedOutside && !strings.Contains(a.Detail, "after the order's payment") {
			t.Errorf("%s: REFUNDED_OUTSIDE detail %q, want it to say the refund came after the payment", no, a.Detail)
		}
	}
}

// TestRefundNoticeAfterPaymentHoldsConfirmation: the merchant refunded a
// paid order by hand in the merchant platform before its stock was
// confirmed; WeChat Pay's REFUND.SUCCESS notice of that refund (which
// the ledger never made) comes after the payment. The notice is stored,
// UNKNOWN_REFUND flagged as before, and now the pending confirmation is
// held dead and REFUNDED_OUTSIDE flagged, as when the refund notice came
// first: the goods must not ship unless a person says so. A redelivery,
// or another notice of the same case, changes nothing twice. A
// confirmation retried once (attempts > 0, PENDING) is held too, and
// replaying it puts it back in the queue.
func TestRefundNoticeAfterPaymentHoldsConfirmation(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "or-reg", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for _, no := range []string{"or-reg", "or-new"} {
			orPay(t, s, no)
			refund := rfRefundNotice(no, "out-"+no, ledger.RefundSuccess)
			reportRefundFirst(t, s, refund)
			assertHeldAfter(t, s, no, "out-"+no, 0)
			want := rfState(t, s, no)
			// WeChat Pay redelivers the notice: stored already, nothing changes.
			if _, err := s.ApplyRefund(ctx, refund); !errors.Is(err, ledger.ErrAlreadyRecorded) {
				t.Fatalf("%s: redelivered refund notice: err = %v, want ErrAlreadyRecorded", no, err)
			}
			// And the payment's, too.
			if _, err := s.ApplyTransaction(ctx, rfPayment(no)); !errors.Is(err, ledger.ErrAlreadyRecorded) {
				t.Fatalf("%s: redelivered payment: err = %v, want ErrAlreadyRecorded", no, err)
			}
			if got := rfState(t, s, no); got != want {
				t.Fatalf("%s after redeliveries:\n got %s\nwant %s", no, got, want)
			}
			if h := orConfirmation(t, s, no).History; len(h) != 1 {
				t.Fatalf("%s: confirmation history %+v, want the one hold", no, h)
			}
			if n, _ := s.Notices(ctx, no); len(n) != 2 {
				t.Fatalf("%s: %d notices stored, want the payment's and the refund's", no, len(n))
			}
		}

		// A confirmation that failed once and waits to retry (PENDING,
		// attempts 1) may have taken effect (its answer lost): it is not
		// held, only flagged; its next attempt asks the inventory first
		// and holds it if the stock is not confirmed (see
		// gateway/inventory: TestAttemptedConfirmationIsAskedBeforeHeld).
		orPay(t, s, "or-retry")
		q := s.Outbox()
		claimed := claimKinds(t, q, "w-a")
		c, ok := claimed["confirm:or-retry"]
		if !ok || len(claimed) != 1 {
			t.Fatalf("claim = %v, want the confirmation of or-retry", claimed)
		}
		now := time.Now().UTC()
		if err := q.Retry(ctx, retry.Attempt{JobID: c.ID, Number: 1, Worker: "w-a", Outcome: retry.OutcomeRetry, Err: "503",
			StartedAt: now, FinishedAt: now, NextRunAt: now}); err != nil {
			t.Fatal(err)
		}
		reportRefundFirst(t, s, rfRefundNotice("or-retry", "out-or-retry", ledger.RefundSuccess))
		if got, want := rfState(t, s, "or-retry"), fmt.Sprintf("jobs [%s:%s:false] anomalies [%s:refunded:or-retry:1 %s:out-or-retry:SUCCESS:1]",
			ledger.JobConfirmInventory, ledger.JobPending, ledger.AnomalyRefundedOutside, ledger.AnomalyUnknownRefund); got != want {
			t.Fatalf("or-retry (attempted before the refund notice):\n got %s\nwant %s", got, want)
		}
		if again := claimKinds(t, q, "w-b"); len(again) != 1 || again["confirm:or-retry"].Attempt != 2 {
			t.Fatalf("claim after the notice = %v, want the confirmation, attempt 2 (which asks first)", again)
		}
	})
}

// TestRefundNoticeAfterPaymentLeavesOthersAlone: the hold takes only a
// confirmation no worker has claimed: a DONE one (the stock is confirmed;
// UNKNOWN_REFUND is flagged as before, for a person) and a RUNNING one
// (in flight; its worker settles it as usual, and REFUNDED_OUTSIDE is
// flagged, which its next attempt, if any, heeds) are left alone. A refund
// notice that moved no money (ABNORMAL, CLOSED, PROCESSING), one naming
// no order, one of an order not paid, and one of another transaction
// than the order's (a duplicate payment refunded) hold nothing. An order
// whose confirmation is pending is held, next to them.
func TestRefundNoticeAfterPaymentLeavesOthersAlone(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		q := s.Outbox()
		now := time.Now().UTC()

		orPay(t, s, "ol-done")
		done := claimKinds(t, q, "w-a")["confirm:ol-done"]
		if err := q.Complete(ctx, retry.Attempt{JobID: done.ID, Number: 1, Worker: "w-a", Outcome: retry.OutcomeDone,
			StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatal(err)
		}
		orPay(t, s, "ol-run")
		running := claimKinds(t, q, "w-b")["confirm:ol-run"]
		if running.ID == 0 {
			t.Fatal("the confirmation of ol-run was not claimed")
		}
		for _, no := range []string{"ol-abn", "ol-closed", "ol-proc", "ol-noorder", "ol-othertx", "ol-held"} {
			orPay(t, s, no)
		}

		reportRefundFirst(t, s, rfRefundNotice("ol-done", "out-ol-done", ledger.RefundSuccess))
		if got, want := rfState(t, s, "ol-done"), fmt.Sprintf("jobs [%s:%s:false] anomalies [%s:out-ol-done:SUCCESS:1]",
			ledger.JobConfirmInventory, ledger.JobDone, ledger.AnomalyUnknownRefund); got != want {
			t.Fatalf("ol-done (confirmed before the refund notice):\n got %s\nwant %s", got, want)
		}
		reportRefundFirst(t, s, rfRefundNotice("ol-run", "out-ol-run", ledger.RefundSuccess))
		if got, want := rfState(t, s, "ol-run"), fmt.Sprintf("jobs [%s:%s:false] anomalies [%s:refunded:ol-run:1 %s:out-ol-run:SUCCESS:1]",
			ledger.JobConfirmInventory, ledger.JobRunning, ledger.AnomalyRefundedOutside, ledger.AnomalyUnknownRefund); got != want {
			t.Fatalf("ol-run (claimed before the refund notice):\n got %s\nwant %s", got, want)
		}
		// Its worker still holds the lease and settles it.
		if err := q.Complete(ctx, retry.Attempt{JobID: running.ID, Number: 1, Worker: "w-b", Outcome: retry.OutcomeDone,
			StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatalf("settle the running confirmation: %v", err)
		}
		if c := orConfirmation(t, s, "ol-run"); c.State != ledger.JobDone {
			t.Fatalf("ol-run: confirmation %+v, want DONE", c)
		}

		for no, st := range map[string]ledger.RefundState{"ol-abn": ledger.RefundAbnormal, "ol-closed": ledger.RefundClosed,
			"ol-proc": ledger.RefundProcessing} {
			reportRefundFirst(t, s, rfRefundNotice(no, "out-"+no, st))
			if got, want := rfState(t, s, no), fmt.Sprintf("jobs [%s:%s:false] anomalies [%s:out-%s:%s:1]",
				ledger.JobConfirmInventory, ledger.JobPending, ledger.AnomalyUnknownRefund, no, st); got != want {
				t.Fatalf("%s (%s moved no money):\n got %s\nwant %s", no, st, got, want)
			}
		}

		noOrder := rfRefundNotice("ol-noorder", "out-ol-noorder", ledger.RefundSuccess)
		noOrder.Notice.OutTradeNo = ""
		reportRefundFirst(t, s, noOrder)
		if got := rfState(t, s, "ol-noorder"); got != plainState() {
			t.Fatalf("ol-noorder (the notice names no order): %s, want %s", got, plainState())
		}

		otherTx := rfRefundNotice("ol-othertx", "out-ol-othertx", ledger.RefundSuccess)
		otherTx.TransactionID, otherTx.Notice.TransactionID = "tx-second", "tx-second"
		reportRefundFirst(t, s, otherTx)
		if got, want := rfState(t, s, "ol-othertx"), fmt.Sprintf("jobs [%s:%s:false] anomalies [%s:out-ol-othertx:SUCCESS:1]",
			ledger.JobConfirmInventory, ledger.JobPending, ledger.AnomalyUnknownRefund); got != want {
			t.Fatalf("ol-othertx (a refund of another transaction):\n got %s\nwant %s", got, want)
		}

		reportRefundFirst(t, s, rfRefundNotice("ol-unpaid", "out-ol-unpaid", ledger.RefundSuccess))
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "ol-expected", AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		reportRefundFirst(t, s, rfRefundNotice("ol-expected", "out-ol-expected", ledger.RefundSuccess))
		if got, want := rfState(t, s, "ol-expected"), fmt.Sprintf("jobs [] anomalies [%s:out-ol-expected:SUCCESS:1]",
			ledger.AnomalyUnknownRefund); got != want {
			t.Fatalf("ol-expected (not paid yet):\n got %s\nwant %s", got, want)
		}

		reportRefundFirst(t, s, rfRefundNotice("ol-held", "out-ol-held", ledger.RefundSuccess))
		assertHeldAfter(t, s, "ol-held", "out-ol-held", 0)
	})
}

// TestRefundNoticeAfterPaymentHoldsWaitingReleases: a gateway refund of
// the order succeeded while its confirmation was pending, so its stock
// release waits behind the confirmation. When the confirmation is held
// for a refund outside the gateway, the release is held with it (dead,
// never attempted, a history row), in sight of the dead letters; a
// release created later is stored held; replaying the confirmation puts
// them all back in the queue behind it.
func TestRefundNoticeAfterPaymentHoldsWaitingReleases(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		orPay(t, s, "oh-1")
		if _, err := s.CreateRefund(ctx, refundReq("oh-1", "rf-oh-gw", 30)); err != nil {
			t.Fatal(err)
		}
		if r, err := move(t, s, "rf-oh-gw", ledger.RefundSuccess); err != nil || r.State != ledger.RefundSuccess {
			t.Fatalf("gateway refund: %+v, %v; want SUCCESS", r, err)
		}
		outside := rfRefundNotice("oh-1", "out-oh-1", ledger.RefundSuccess)
		outside.Amount = 50
		reportRefundFirst(t, s, outside)

		q := s.Outbox()
		jobs, err := q.JobsOf(ctx, "oh-1")
		if err != nil || len(jobs) != 2 || jobs[1].Kind != ledger.JobReleaseInventory {
			t.Fatalf("jobs of oh-1 = %+v, %v; want the confirmation and the release", jobs, err)
		}
		confirm, release := jobs[0], jobs[1]
		if confirm.State != ledger.JobDead || !strings.HasPrefix(confirm.LastError, heldOutsidePrefix) {
			t.Fatalf("confirmation = %+v, want held for the refund outside the gateway", confirm)
		}
		heldBy := fmt.Sprintf("held: confirmation job %d is dead", confirm.ID)
		if release.State != ledger.JobDead || release.Attempts != 0 || !strings.HasPrefix(release.LastError, heldBy) ||
			len(release.History) != 1 || release.History[0].Outcome != retry.OutcomeDead {
			t.Fatalf("release = %+v, want held by confirmation %d with a history row", release, confirm.ID)
		}
		if got := claimKinds(t, q, "w-a"); len(got) != 0 {
			t.Fatalf("claimed %v while the confirmation is held", got)
		}
		// A gateway refund that succeeds now: its release is stored held.
		if _, err := s.CreateRefund(ctx, refundReq("oh-1", "rf-oh-gw2", 20)); err != nil {
			t.Fatal(err)
		}
		if _, err := move(t, s, "rf-oh-gw2", ledger.RefundSuccess); err != nil {
			t.Fatal(err)
		}
		dead, err := q.DeadJobs(ctx, 10)
		if err != nil || len(dead) != 3 {
			t.Fatalf("dead jobs = %+v, %v; want the confirmation and its two releases", dead, err)
		}
		if _, err := q.Replay(ctx, release.ID, "ops:alice"); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("replay of a held release alone: err = %v, want ErrConflict", err)
		}
		if _, err := q.Replay(ctx, confirm.ID, "ops:alice"); err != nil {
			t.Fatal(err)
		}
		claimed := claimKinds(t, q, "w-a")
		if len(claimed) != 1 || claimed["confirm:oh-1"].ID != confirm.ID {
			t.Fatalf("claim after the replay = %v, want only the confirmation (the releases wait behind it)", claimed)
		}
		now := time.Now().UTC()
		if err := q.Complete(ctx, retry.Attempt{JobID: confirm.ID, Number: 1, Worker: "w-a", Outcome: retry.OutcomeDone,
			StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatal(err)
		}
		if last := claimKinds(t, q, "w-b"); len(last) != 2 || last["release:rf-oh-gw"].ID == 0 || last["release:rf-oh-gw2"].ID == 0 {
			t.Fatalf("claim after the confirmation = %v, want both releases", last)
		}
	})
}

// claimDuringNotice pays order no, locks its confirmation as a worker's
// claim does, stores a refund notice of a refund the ledger never made
// meanwhile (it must wait for the row), then moves the job to RUNNING and
// commits, and returns the job's id once the notice has finished. It
// returns 0 when InnoDB chose the claim as a deadlock's victim.
func claimDuringNotice(t *testing.T, s *ledger.Store, no string) (uint64, time.Time) {
	t.Helper()
	ctx := context.Background()
	orPay(t, s, no)
	claim := s.DB().Begin()
	defer claim.Rollback()
	var id uint64
	if err := claim.Raw("SELECT id FROM outbox_jobs WHERE job_key = ? AND state = ? FOR UPDATE SKIP LOCKED",
		"confirm:"+no, ledger.JobPending).Scan(&id).Error; err != nil || id == 0 {
		t.Fatalf("lock the confirmation as a claim does: id %d, %v", id, err)
	}
	applied := make(chan error, 1)
	go func() {
		_, err := s.ApplyRefund(ctx, rfRefundNotice(no, "out-"+no, ledger.RefundSuccess))
		applied <- err
	}()
	select {
	case err := <-applied:
		t.Fatalf("the refund notice did not wait for the claimed confirmation: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	now := time.Now().UTC()
	err := claim.Exec("UPDATE outbox_jobs SET state = ?, lease_owner = ?, lease_until = ?, next_run_at = ?, "+
		"attempts = attempts + 1, first_attempt_at = ? WHERE id = ?", ledger.JobRunning, "w-a", now.Add(time.Hour),
		now.Add(time.Hour), now, id).Error
	if err == nil {
		err = claim.Commit().Error
	}
	var my *mysql.MySQLError
	deadlock := errors.As(err, &my) && my.Number == 1213
	if err != nil && !deadlock {
		t.Fatal(err)
	}
	if deadlock {
		id = 0
		claim.Rollback() // the notice goes on, and holds the confirmation
	}
	select {
	case err := <-applied:
		if !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("refund notice: err = %v, want ErrNotFound (stored, flagged UNKNOWN_REFUND)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the refund notice never finished")
	}
	return id, now
}

// TestRefundNoticeAfterPaymentYieldsToAClaim: on MySQL a worker's claim
// locks the confirmation (SKIP LOCKED) and moves it to RUNNING. A refund
// notice stored meanwhile waits for that row and then finds it RUNNING:
// the hold is conditional on PENDING, so it does not overwrite the claim
// (it flags REFUNDED_OUTSIDE), and the worker settles its attempt.
// Without the claim the same notice
// holds the confirmation.
func TestRefundNoticeAfterPaymentYieldsToAClaim(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		if s.Dialect() != migrations.MySQL {
			t.Skip("SQLite has no row locks: one writer at a time")
		}
		ctx := context.Background()
		orPay(t, s, "oy-free")
		reportRefundFirst(t, s, rfRefundNotice("oy-free", "out-oy-free", ledger.RefundSuccess))
		assertHeldAfter(t, s, "oy-free", "out-oy-free", 0)

		// The claim below is held open 300 ms, far longer than a real one,
		// and InnoDB may pick it as a deadlock's victim (the notice's locking
		// reads take gap locks its UPDATE of the state index needs); the real
		// claim and notice are both retried then. Here the round goes to a
		// new order.
		no, id, now := "", uint64(0), time.Time{}
		for round := 1; id == 0; round++ {
			if round > 5 {
				t.Fatal("the claim lost a deadlock in five rounds")
			}
			no = fmt.Sprintf("oy-%d", round)
			id, now = claimDuringNotice(t, s, no)
		}
		if got, want := rfState(t, s, no), fmt.Sprintf("jobs [%s:%s:false] anomalies [%s:refunded:%s:1 %s:out-%s:SUCCESS:1]",
			ledger.JobConfirmInventory, ledger.JobRunning, ledger.AnomalyRefundedOutside, no, ledger.AnomalyUnknownRefund, no); got != want {
			t.Fatalf("%s (claimed while its refund notice was stored):\n got %s\nwant %s", no, got, want)
		}
		if err := s.Outbox().Complete(ctx, retry.Attempt{JobID: id, Number: 1, Worker: "w-a", Outcome: retry.OutcomeDone,
			StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatalf("the worker settles its claim: %v", err)
		}
	})
}
