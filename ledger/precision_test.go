package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/migrations"
)

// lastInstant is a business day's last 400 ns: MySQL 8 would round a time
// stored from it to the next day.
var lastInstant = time.Date(2026, 11, 23, 23, 59, 59, 999_999_600, ledger.BusinessDay)

// lastMicro is lastInstant as the ledger must store and answer it.
var lastMicro = time.Date(2026, 11, 23, 15, 59, 59, 999_999_000, time.UTC)

// sameTime fails unless each of got is lastMicro, in UTC.
func sameTime(t *testing.T, what string, got ...*time.Time) {
	t.Helper()
	timesAre(t, what, lastMicro, got...)
}

// timesAre fails unless each of got is want, in UTC.
func timesAre(t *testing.T, what string, want time.Time, got ...*time.Time) {
	t.Helper()
	for i, g := range got {
		if g == nil || *g != want {
			t.Errorf("%s #%d = %v, want %v", what, i, g, want)
		}
	}
}

// TestRegisterAnswersTheStoredExpiry: the first answer to a registration
// carries the expire_at a retry answers and the row holds, so the
// business makes the prepay with one deadline whichever answer it got.
func TestRegisterAnswersTheStoredExpiry(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		o := ledger.Order{OutTradeNo: "exp-0001", AmountTotal: 100, ExpireAt: lastInstant}
		first, err := s.RegisterOrder(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		again, err := s.RegisterOrder(ctx, o)
		if !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("retry: %v", err)
		}
		stored, err := s.Payment(ctx, o.OutTradeNo)
		if err != nil {
			t.Fatal(err)
		}
		sameTime(t, "expire_at (first, retry, stored)", first.ExpireAt, again.ExpireAt, stored.ExpireAt)

		// Registered after its callback: the row is updated, not inserted.
		paidOrder(t, s, "exp-0002", 100)
		late, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: "exp-0002", AmountTotal: 100, ExpireAt: lastInstant})
		if err != nil {
			t.Fatal(err)
		}
		stored, err = s.Payment(ctx, "exp-0002")
		if err != nil {
			t.Fatal(err)
		}
		sameTime(t, "expire_at of a paid order (answer, stored)", late.ExpireAt, stored.ExpireAt)
	})
}

// TestPaidTimeKeepsItsSecond: a success_time WeChat Pay states, and the
// store's own time, in a day's last microsecond stay on that day.
func TestPaidTimeKeepsItsSecond(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		s = s.WithClock(func() time.Time { return lastInstant })
		u := paid("n-late", "late-0001", "tx-late", 100)
		u.SuccessTime = lastInstant
		answer, err := s.ApplyTransaction(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := s.Payment(ctx, u.OutTradeNo)
		if err != nil {
			t.Fatal(err)
		}
		sameTime(t, "success_time (answer, stored)", answer.SuccessTime, stored.SuccessTime)
		sameTime(t, "created_at and updated_at (answer, stored)",
			&answer.CreatedAt, &answer.UpdatedAt, &stored.CreatedAt, &stored.UpdatedAt)
	})
}

// TestRefundTimesKeepTheirSecond: a refund's check time, WeChat Pay's
// success and acceptance times, and the store's time standing in for a
// success time not stated, stay on their day, answered as stored.
func TestRefundTimesKeepTheirSecond(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		s = s.WithClock(func() time.Time { return lastInstant })
		paidOrder(t, s, "rlate-1", 100)
		req := refundReq("rlate-1", "rf-late-1", 10)
		req.CheckAt = lastInstant
		created, err := s.CreateRefund(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		stored := refundAsStored(t, s, req.OutRefundNo)
		sameTime(t, "next_check_at (answer, stored)", created.NextCheckAt, stored.NextCheckAt)

		done, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: req.OutRefundNo, State: ledger.RefundSuccess,
			SuccessTime: lastInstant, AcceptTime: lastInstant, Source: ledger.SourceQuery})
		if err != nil {
			t.Fatal(err)
		}
		stored = refundAsStored(t, s, req.OutRefundNo)
		sameTime(t, "success_time and accepted_at (answer, stored)",
			done.SuccessTime, done.AcceptedAt, stored.SuccessTime, stored.AcceptedAt)

		if _, err := s.CreateRefund(ctx, refundReq("rlate-1", "rf-late-2", 10)); err != nil {
			t.Fatal(err)
		}
		done, err = move(t, s, "rf-late-2", ledger.RefundSuccess) // no success time stated: the store's
		if err != nil {
			t.Fatal(err)
		}
		stored = refundAsStored(t, s, "rf-late-2")
		sameTime(t, "success_time from the store's clock (answer, stored)", done.SuccessTime, stored.SuccessTime)
	})
}

// TestRefundCheckTimesInMicroseconds: every next_check_at a refund is
// given, by its caller or from a lease, is answered as stored.
func TestRefundCheckTimesInMicroseconds(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		s = s.WithClock(func() time.Time { return lastInstant })
		paidOrder(t, s, "rcheck-1", 100)
		no := "rf-check-1"
		created, err := s.CreateRefund(ctx, refundReq("rcheck-1", no, 10))
		if err != nil {
			t.Fatal(err)
		}
		counted, err := s.CountRefundAttempt(ctx, no, created.Version, lastInstant.Add(-3*time.Second), 0)
		if err != nil {
			t.Fatal(err)
		}
		timesAre(t, "next_check_at of an attempt (stored)", lastMicro.Add(-3*time.Second), counted.NextCheckAt)

		pending := ledger.RefundUpdate{OutRefundNo: no, State: ledger.RefundProcessing, Source: ledger.SourceQuery,
			NextCheckAt: lastInstant.Add(-2 * time.Second)}
		moved, err := s.ApplyRefund(ctx, pending)
		if err != nil {
			t.Fatal(err)
		}
		timesAre(t, "next_check_at of a move (answer, stored)", lastMicro.Add(-2*time.Second),
			moved.NextCheckAt, refundAsStored(t, s, no).NextCheckAt)

		pending.NextCheckAt = lastInstant.Add(-time.Second)
		if _, err := s.ApplyRefund(ctx, pending); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("same state again: %v", err)
		}
		timesAre(t, "next_check_at of a same-state update (stored)", lastMicro.Add(-time.Second),
			refundAsStored(t, s, no).NextCheckAt)

		claimed, err := s.ClaimStuckRefunds(ctx, lastInstant, 1, time.Hour+300*time.Nanosecond)
		if err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %v, %v", claimed, err)
		}
		timesAre(t, "next_check_at of a claim (answer, stored)", lastMicro.Add(time.Hour),
			claimed[0].NextCheckAt, refundAsStored(t, s, no).NextCheckAt)

		// Another amount rolls the update back but keeps its next check.
		other := ledger.RefundUpdate{OutRefundNo: no, State: ledger.RefundSuccess, Amount: 11, Source: ledger.SourceQuery,
			NextCheckAt: lastInstant.Add(2 * time.Hour)}
		var mismatch *ledger.AmountMismatchError
		if _, err := s.ApplyRefund(ctx, other); !errors.As(err, &mismatch) {
			t.Fatalf("another amount: %v", err)
		}
		timesAre(t, "next_check_at kept by a mismatch (stored)", lastMicro.Add(2*time.Hour),
			refundAsStored(t, s, no).NextCheckAt)
	})
}

// TestStoreClockInMicroseconds: the store's own clock reads no finer
// time than the database keeps.
func TestStoreClockInMicroseconds(t *testing.T) {
	s := ledgertest.OpenSQLite(t)
	for range 5 { // a nanosecond reading is a whole microsecond once in a thousand
		if now := s.Now(); now.Nanosecond()%1000 != 0 || now.Location() != time.UTC {
			t.Fatalf("the store's clock reads %v, want UTC to the microsecond", now)
		}
	}
}

func refundAsStored(t *testing.T, s *ledger.Store, outRefundNo string) *ledger.Refund {
	t.Helper()
	r, err := s.Refund(context.Background(), outRefundNo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDBClockInMicroseconds: the database clock, which production gives
// the store and gorm, reads no finer time than the database keeps.
func TestDBClockInMicroseconds(t *testing.T) {
	c := ledger.NewDBClock(nil, migrations.SQLite).WithLocal(func() time.Time { return lastInstant })
	if now := c.Now(); now != lastMicro {
		t.Fatalf("clock reads %v, want %v", now, lastMicro)
	}
}
