package ledger_test

import (
	"context"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// hourBehind is a host whose clock runs an hour late.
func hourBehind() time.Time { return time.Now().Add(-time.Hour) }

// TestDBClockCorrectsASkewedHost: the MariaDB server runs on this host, so
// its clock is the test's; a clock synced against it from a host an hour
// behind must read the right time.
func TestDBClockCorrectsASkewedHost(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	c := ledger.NewDBClock(s.DB(), s.Dialect()).WithLocal(hourBehind)
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := c.Offset() - time.Hour; d.Abs() > time.Second {
		t.Fatalf("offset = %v, want about 1h", c.Offset())
	}
	if d := time.Since(c.Now()); d.Abs() > time.Second {
		t.Fatalf("clock reads %v, %v away from now", c.Now(), d)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	before := c.Offset()
	if err := c.Sync(cancelled); err == nil {
		t.Fatal("sync with a cancelled context succeeded")
	}
	if c.Offset() != before {
		t.Fatalf("a failed sync changed the offset from %v to %v", before, c.Offset())
	}
}

// TestDBClockIsLocalOnSQLite: SQLite is a file on this host.
func TestDBClockIsLocalOnSQLite(t *testing.T) {
	s := ledgertest.OpenSQLite(t)
	c := ledger.NewDBClock(s.DB(), s.Dialect())
	if err := c.Sync(context.Background()); err != nil || c.Offset() != 0 {
		t.Fatalf("offset = %v, err %v; want 0", c.Offset(), err)
	}
}

// TestLeaseFromASkewedHostHolds: an instance whose clock runs an hour late
// claims an outbox job for a minute. On its own clock the lease it writes
// ended 59 minutes ago and a second instance takes the job at once; on
// the database's clock the second instance must wait.
func TestLeaseFromASkewedHostHolds(t *testing.T) {
	cases := []struct {
		name      string
		clock     func(s *ledger.Store) func() time.Time
		wantStole bool
	}{
		{"host clock", func(*ledger.Store) func() time.Time { return hourBehind }, true},
		{"database clock", func(s *ledger.Store) func() time.Time {
			c := ledger.NewDBClock(s.DB(), s.Dialect()).WithLocal(hourBehind)
			if err := c.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			return c.Now
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := ledgertest.OpenMySQL(t)
			ctx := context.Background()
			late := s.WithClock(tc.clock(s))
			if _, err := late.ApplyTransaction(ctx, paid("ck-n1", "ck-o1", "ck-tx1", 100)); err != nil {
				t.Fatal(err)
			}
			if a, err := late.Outbox().Claim(ctx, "w-late", 10, time.Minute); err != nil || len(a) != 1 {
				t.Fatalf("claim by the late host = %+v, err %v", a, err)
			}
			b, err := s.Outbox().Claim(ctx, "w-right", 10, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if stole := len(b) == 1; stole != tc.wantStole {
				t.Fatalf("second instance took the leased job: %v, want %v", stole, tc.wantStole)
			}
		})
	}
}

// TestDBClockSyncIgnoresPoolWaits: a sync in a busy pool (here one
// connection, held 200 ms at a time by someone else) waits for a
// connection once, before its timed reads: each read waiting its turn
// counted the wait as round trip, and put the offset off by half of it.
func TestDBClockSyncIgnoresPoolWaits(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	sqlDB, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1)
	ctx, stop := context.WithCancel(context.Background())
	hogDone := make(chan struct{})
	go func() { // takes the connection again as soon as it is free
		defer close(hogDone)
		for ctx.Err() == nil {
			conn, err := sqlDB.Conn(ctx)
			if err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
			conn.Close()
		}
	}()
	time.Sleep(20 * time.Millisecond)
	c := ledger.NewDBClock(s.DB(), s.Dialect())
	err = c.Sync(context.Background())
	stop()
	<-hogDone
	if err != nil {
		t.Fatal(err)
	}
	// The server runs on this host: the true offset is about zero.
	if off := c.Offset(); off.Abs() > 50*time.Millisecond {
		t.Fatalf("offset %v measured in a busy pool, want about 0", off)
	}
}
