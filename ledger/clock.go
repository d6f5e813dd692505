package ledger

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"paygateway/migrations"
)

// DBClock is the database server's clock as this instance sees it: the
// local clock plus an offset measured by asking the database for its time.
// Leases, deadlines and next-check times are written by one instance and
// compared by another; reading them all against the database's clock means
// a host whose clock runs behind cannot hand out leases that have already
// run out for everyone else. SQLite lives on this host, so there the
// offset is zero. Between syncs it counts on the monotonic clock from the
// last reading, so a step of the host's wall clock (NTP) changes nothing.
type DBClock struct {
	db      *gorm.DB
	dialect migrations.Dialect
	local   func() time.Time
	last    atomic.Pointer[clockReading] // nil before the first sync
}

// clockReading is the database's time at one local instant.
type clockReading struct {
	db    time.Time // the database's time (no monotonic reading)
	local time.Time // the local instant, with its monotonic reading
}

// clockSamples is how many round trips a sync takes; the one with the
// shortest round trip gives the offset (its error is at most half of it).
const clockSamples = 3

// unixMicrosSQL reads the server's UTC time in microseconds since 1970,
// whatever the session's time zone.
const unixMicrosSQL = "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))"

// NewDBClock returns a clock that reads the local time until Sync.
func NewDBClock(db *gorm.DB, d migrations.Dialect) *DBClock {
	return &DBClock{db: db, dialect: d, local: time.Now}
}

// WithLocal returns the clock reading local time from now (tests use it to
// play a host whose clock is wrong).
func (c *DBClock) WithLocal(now func() time.Time) *DBClock {
	n := &DBClock{db: c.db, dialect: c.dialect, local: now}
	n.last.Store(c.last.Load())
	return n
}

// Now returns the database's time in UTC, to the microsecond: it is
// gorm's clock and the store's, and the database keeps no finer time
// (see dbTime).
func (c *DBClock) Now() time.Time {
	now := c.local()
	r := c.last.Load()
	if r == nil {
		return dbTime(now)
	}
	return dbTime(r.db.Add(now.Sub(r.local)))
}

// Offset is how far the database's clock was ahead of the local one at
// the last sync.
func (c *DBClock) Offset() time.Duration {
	r := c.last.Load()
	if r == nil {
		return 0
	}
	return r.db.Sub(r.local.Round(0))
}

// Sync measures the offset again. On error the last offset stays.
func (c *DBClock) Sync(ctx context.Context) error {
	if c.dialect != migrations.MySQL {
		return nil
	}
	// One connection taken first: a wait for a free one in a busy pool
	// would count as round trip, and could fill every sample's.
	sqlDB, err := c.db.DB()
	if err != nil {
		return fmt.Errorf("read the database clock: %w", err)
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("read the database clock: %w", err)
	}
	defer conn.Close()
	var best *clockReading
	bestRTT := time.Duration(-1)
	for range clockSamples {
		sent := c.local()
		var micros int64
		if err := conn.QueryRowContext(ctx, unixMicrosSQL).Scan(&micros); err != nil {
			return fmt.Errorf("read the database clock: %w", err)
		}
		got := c.local()
		rtt := got.Sub(sent)
		if bestRTT < 0 || rtt < bestRTT {
			best = &clockReading{db: time.UnixMicro(micros).UTC(), local: sent.Add(rtt / 2)}
			bestRTT = rtt
		}
	}
	c.last.Store(best)
	return nil
}

// Run syncs every interval until ctx ends, each sync bounded by timeout.
// A failed sync is logged and the last offset stays in use: host clocks
// drift by milliseconds a minute, far less than any lease.
func (c *DBClock) Run(ctx context.Context, every, timeout time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		if err := c.Sync(sctx); err != nil && ctx.Err() == nil {
			slog.WarnContext(ctx, "database clock sync failed; keeping the last offset",
				"offset", c.Offset().String(), "err", err)
		} else if off := c.Offset(); err == nil && off.Abs() > time.Second {
			// Leases follow the database, but WeChat Pay's signature window
			// and the HTTP deadlines follow this host: a host clock that
			// jumped shows here first.
			slog.WarnContext(ctx, "this host's clock differs from the database's", "offset", off.String())
		}
		cancel()
	}
}
