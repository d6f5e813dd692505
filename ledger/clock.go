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
// offset is zero.
type DBClock struct {
	db      *gorm.DB
	dialect migrations.Dialect
	local   func() time.Time
	offset  atomic.Int64 // database minus local, in nanoseconds
}

// clockSamples is how many round trips a sync takes; the one with the
// shortest round trip gives the offset (its error is at most half of it).
const clockSamples = 3

// unixMicrosSQL reads the server's UTC time in microseconds since 1970,
// whatever the session's time zone.
const unixMicrosSQL = "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))"

// NewDBClock returns a clock with a zero offset; call Sync before use.
func NewDBClock(db *gorm.DB, d migrations.Dialect) *DBClock {
	return &DBClock{db: db, dialect: d, local: time.Now}
}

// WithLocal returns the clock reading local time from now (tests use it to
// play a host whose clock is wrong).
func (c *DBClock) WithLocal(now func() time.Time) *DBClock {
	n := &DBClock{db: c.db, dialect: c.dialect, local: now}
	n.offset.Store(c.offset.Load())
	return n
}

// Now returns the database's time in UTC.
func (c *DBClock) Now() time.Time {
	return c.local().Add(c.Offset()).UTC()
}

// Offset is how far the database's clock is ahead of the local one.
func (c *DBClock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Sync measures the offset again. On error the last offset stays.
func (c *DBClock) Sync(ctx context.Context) error {
	if c.dialect != migrations.MySQL {
		return nil
	}
	best, bestRTT := time.Duration(0), time.Duration(-1)
	for range clockSamples {
		sent := c.local()
		var micros int64
		err := c.db.WithContext(ctx).Raw(unixMicrosSQL).Scan(&micros).Error
		if err != nil {
			return fmt.Errorf("read the database clock: %w", err)
		}
		got := c.local()
		rtt := got.Sub(sent)
		if bestRTT < 0 || rtt < bestRTT {
			mid := sent.Add(rtt / 2)
			best, bestRTT = time.UnixMicro(micros).Sub(mid), rtt
		}
	}
	c.offset.Store(int64(best))
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
		}
		cancel()
	}
}
