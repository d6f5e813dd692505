package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// assertPaid checks one order ended SUCCESS with exactly one notice, one
// history row (plus its registration) and one confirm job.
func assertPaid(t *testing.T, s *ledger.Store, no string, amount int64, history int) {
	t.Helper()
	ctx := context.Background()
	p, err := s.Payment(ctx, no)
	if err != nil || p.State != ledger.PaymentSuccess || p.AmountTotal != amount {
		t.Fatalf("payment %s = %+v, %v", no, p, err)
	}
	assertCounts(t, s, no, history, 1)
	jobs, err := s.Outbox().JobsOf(ctx, no)
	if err != nil || len(jobs) != 1 || jobs[0].Kind != ledger.JobConfirmInventory {
		t.Fatalf("jobs of %s = %+v, %v", no, jobs, err)
	}
}

// TestBatchOfPlainChanges: new orders and a registered one share one
// transaction and each gets its state change, history row and job.
func TestBatchOfPlainChanges(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "b-reg", AmountTotal: 300, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		us := []ledger.TransactionUpdate{paid("bn-reg", "b-reg", "btx-reg", 300)}
		for i := range 20 {
			us = append(us, paid(fmt.Sprintf("bn-%d", i), fmt.Sprintf("b-%02d", i), fmt.Sprintf("btx-%d", i), int64(100+i)))
		}
		errs, batched := s.ApplyTransactions(ctx, us)
		if !batched {
			t.Fatal("plain changes were not batched")
		}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("update %d: %v", i, err)
			}
		}
		assertPaid(t, s, "b-reg", 300, 2)
		for i := range 20 {
			assertPaid(t, s, fmt.Sprintf("b-%02d", i), int64(100+i), 1)
		}
		h, _ := s.History(ctx, "b-reg")
		if h[1].From != "EXPECTED" || h[1].To != "SUCCESS" || h[1].Ref != "bn-reg" {
			t.Fatalf("history of the registered order = %+v", h)
		}
	})
}

// TestBatchFallsBackPerUpdate: a batch holding a stored notice, an amount
// mismatch (recorded, flagged, its confirmation held) and two notices for
// one order is applied one by one, each with the answer ApplyTransaction
// gives, and the plain ones still apply.
func TestBatchFallsBackPerUpdate(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		if _, err := s.ApplyTransaction(ctx, paid("fn-old", "f-old", "ftx-old", 100)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "f-mm", AmountTotal: 500, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		us := []ledger.TransactionUpdate{
			paid("fn-old", "f-old", "ftx-old", 100), // stored already
			paid("fn-mm", "f-mm", "ftx-mm", 499),    // amount differs from the registered 500
			paid("fn-a", "f-new", "ftx-a", 100),     // plain
			paid("fn-b", "f-twin", "ftx-b", 100),    // two notices, one order
			paid("fn-c", "f-twin", "ftx-b", 100),
		}
		errs, batched := s.ApplyTransactions(ctx, us)
		if batched {
			t.Fatal("a batch with duplicates was applied as one")
		}
		switch {
		case !errors.Is(errs[0], ledger.ErrAlreadyRecorded):
			t.Fatalf("stored notice: %v", errs[0])
		case errs[1] != nil:
			t.Fatalf("mismatch: %v, want it recorded", errs[1])
		case errs[2] != nil:
			t.Fatalf("plain: %v", errs[2])
		case (errs[3] == nil) == (errs[4] == nil):
			t.Fatalf("twins: %v / %v, want one applied and one already recorded", errs[3], errs[4])
		}
		assertPaid(t, s, "f-new", 100, 1)
		assertPaid(t, s, "f-twin", 100, 1)
		assertPaid(t, s, "f-mm", 499, 2)
		if j, _ := s.Outbox().JobsOf(ctx, "f-mm"); j[0].State != ledger.JobDead {
			t.Fatalf("mismatched payment's confirmation = %+v, want it held (DEAD)", j[0])
		}
		if a, _ := s.Anomalies(ctx, "f-mm"); len(a) != 1 || a[0].Kind != ledger.AnomalyAmountMismatch {
			t.Fatalf("mismatch anomalies = %+v", a)
		}
	})
}

// TestBatchRaceWithSingleApply: while batches run, the same notices are
// also applied one by one from other goroutines; every order still ends
// with exactly one notice, one history row and one job.
func TestBatchRaceWithSingleApply(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const orders = 40
		us := make([]ledger.TransactionUpdate, orders)
		for i := range us {
			us[i] = paid(fmt.Sprintf("rn-%d", i), fmt.Sprintf("r-%02d", i), fmt.Sprintf("rtx-%d", i), 100)
		}
		done := make(chan []error, 8)
		for g := range 4 {
			go func() { errs, _ := s.ApplyTransactions(ctx, us[g*10:g*10+10]); done <- errs }()
			go func() { errs, _ := s.ApplyTransactions(ctx, us[g*10:g*10+1]); done <- errs }()
		}
		for range 8 {
			for _, err := range <-done {
				if err != nil && !errors.Is(err, ledger.ErrAlreadyRecorded) {
					t.Errorf("apply: %v", err)
				}
			}
		}
		for i := range orders {
			assertPaid(t, s, fmt.Sprintf("r-%02d", i), 100, 1)
		}
	})
}

// TestFailedBatchTakesFewConnections: a batch of 32 redeliveries (the
// commit marks lost, say) cannot be applied as one and falls back to one
// transaction per update; those must not take 32 connections at once.
func TestFailedBatchTakesFewConnections(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	us := recordedUpdates(t, s, "c", 32)
	var errs []error
	var batched bool
	peak := samplePeak(t, s, func() { errs, batched = s.ApplyTransactions(context.Background(), us) })
	for i, err := range errs {
		if !errors.Is(err, ledger.ErrAlreadyRecorded) || batched {
			t.Fatalf("update %d: %v (batched %t), want already recorded", i, err, batched)
		}
	}
	if peak > 5 {
		t.Fatalf("%d connections in use at once, want at most 5", peak)
	}
}

// recordedUpdates records n payments and returns their updates: applied
// again, in a batch, they fail it and are applied one by one.
func recordedUpdates(t *testing.T, s *ledger.Store, tag string, n int) []ledger.TransactionUpdate {
	t.Helper()
	us := make([]ledger.TransactionUpdate, n)
	for i := range us {
		us[i] = paid(fmt.Sprintf("%sn-%d", tag, i), fmt.Sprintf("%s-%02d", tag, i), fmt.Sprintf("%stx-%d", tag, i), 100)
		if _, err := s.ApplyTransaction(context.Background(), us[i]); err != nil {
			t.Fatal(err)
		}
	}
	return us
}

// samplePeak runs do while sampling the connections of s's pool in use
// (none idle is closed meanwhile), and returns the most seen at once.
func samplePeak(t *testing.T, s *ledger.Store, do func()) int {
	t.Helper()
	db, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxIdleConns(64)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int64(db.Stats().InUse); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	do()
	close(stop)
	<-sampled
	return int(peak.Load())
}

// TestFailedBatchesShareTheirSlots: two failed batches at once (both
// batch workers' redeliveries) still take at most soloConcurrency
// connections for their single applies, plus the other's batch
// transaction: the notifications' own pool has batch_workers + 4.
func TestFailedBatchesShareTheirSlots(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	batches := [][]ledger.TransactionUpdate{recordedUpdates(t, s, "s", 64), recordedUpdates(t, s, "z", 64)}
	peak := samplePeak(t, s, func() {
		var wg sync.WaitGroup
		for _, us := range batches {
			wg.Go(func() {
				for i, err := range first(s.ApplyTransactions(context.Background(), us)) {
					if !errors.Is(err, ledger.ErrAlreadyRecorded) {
						t.Errorf("update %d: %v, want already recorded", i, err)
					}
				}
			})
		}
		wg.Wait()
	})
	if peak > 5 {
		t.Fatalf("%d connections in use at once, want at most 5", peak)
	}
}

func first[A, B any](a A, _ B) A { return a }

// TestFailedBatchWaitsForSlotsWithinItsTime: while another failed batch's
// single applies hold every slot (blocked on locked orders), a second
// failed batch whose time runs out gets context errors then, not when the
// slots free up; nothing of it is recorded, and the first batch applies
// once the locks go.
func TestFailedBatchWaitsForSlotsWithinItsTime(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	ctx := context.Background()
	for _, no := range []string{"sl1", "sl2"} {
		if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 100, ExpireAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	db, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	lock, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.ExecContext(ctx, "SELECT id FROM payments WHERE out_trade_no IN ('sl1', 'sl2') FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	// Two updates of one order make a batch take the single path at once.
	held := []ledger.TransactionUpdate{paid("sl1-a", "sl1", "tx-sl1", 100), paid("sl1-b", "sl1", "tx-sl1", 100),
		paid("sl2-a", "sl2", "tx-sl2", 100), paid("sl2-b", "sl2", "tx-sl2", 100)}
	firstDone := make(chan []error)
	go func() { firstDone <- first(s.ApplyTransactions(ctx, held)) }()
	// Its four single applies take the slots, each in a transaction (a
	// connection) of its own, and wait on the locks.
	for deadline := time.Now().Add(10 * time.Second); db.Stats().InUse < 5; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections in use, want the lock's and four applies'", db.Stats().InUse)
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	errs := first(s.ApplyTransactions(short, []ledger.TransactionUpdate{paid("sl3-a", "sl3", "tx-sl3", 100),
		paid("sl3-b", "sl3", "tx-sl3", 100)}))
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the second batch waited %v for slots, past its time", took)
	}
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("update %d: %v, want its deadline", i, err)
		}
	}
	if _, err := s.Payment(ctx, "sl3"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("the timed-out batch left a payment: %v", err)
	}
	lock.Rollback()
	for i, err := range <-firstDone {
		if err != nil && !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Errorf("held update %d: %v", i, err)
		}
	}
	if p, err := s.Payment(ctx, "sl1"); err != nil || p.State != ledger.PaymentSuccess {
		t.Fatalf("the first batch's order: %+v, %v", p, err)
	}
}
