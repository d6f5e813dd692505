// Package daytest holds test helpers about the business day (UTC+8) that
// need no database, so that test binaries without one (the WeChat Pay
// client's and its fuzz targets') do not link the SQLite engine, as
// ledgertest does.
package daytest

import (
	"testing"
	"time"

	"paygateway/ledger"
)

// AwayFromMidnight waits, when midnight UTC+8 (the business day's end) is
// less than d away, until it has passed: a test that takes its business day
// from the wall clock and then pays, refunds or asks for a bill on it (the
// simulator and the gateway stamp them with the wall clock) must not see
// the day change under it.
func AwayFromMidnight(t testing.TB, d time.Duration) {
	t.Helper()
	today, _ := ledger.DayStart(ledger.DayOf(time.Now()))
	if wait := time.Until(today.Add(24 * time.Hour)); wait < d {
		t.Logf("waiting %v for midnight UTC+8 to pass", wait)
		time.Sleep(wait + time.Millisecond)
	}
}
