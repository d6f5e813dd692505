package gateway

import (
	"testing"
	"time"
)

// TestDayBounds: the first day the finance API takes is 2000-01-01 in
// business time (UTC+8), whose midnight is 1999-12-31 in UTC.
func TestDayBounds(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		day  string
		past bool
		ok   bool
	}{
		{"2000-01-01", false, true}, {"2000-01-01", true, true},
		{"1999-12-31", false, false}, {"1999-12-31", true, false},
		{"2026-11-30", false, true}, {"2026-11-30", true, false}, // today: no bill yet
		{"2026-12-01", false, false},
	} {
		parse := parseDay
		if tc.past {
			parse = parsePastDay
		}
		if got, err := parse(tc.day, now); (err == nil) != tc.ok || (tc.ok && got != tc.day) {
			t.Errorf("day %s (past %v): %q, %v; want ok=%v", tc.day, tc.past, got, err, tc.ok)
		}
	}
}

// TestCSVTimesSortAsText: every CSV time has the same width, so text
// order is time order.
func TestCSVTimesSortAsText(t *testing.T) {
	base := time.Date(2026, 5, 1, 16, 30, 0, 0, time.FixedZone("UTC+8", 8*3600))
	times := []time.Time{base, base.Add(500 * time.Millisecond), base.Add(time.Second + 1500*time.Microsecond)}
	for i := 1; i < len(times); i++ {
		a, b := ts(times[i-1]), ts(times[i])
		if len(a) != len(b) || a >= b {
			t.Errorf("%q then %q: want equal widths in time order", a, b)
		}
	}
	if got := ts(base); got != "2026-05-01T08:30:00.000000Z" {
		t.Errorf("ts = %q, want UTC with microseconds", got)
	}
}

// TestTimeWithUnencodedPlus: "+08:00" sent unencoded in a query reads as
// " 08:00"; that one space before the offset is taken for the + it was.
// Other spaces are still refused.
func TestTimeWithUnencodedPlus(t *testing.T) {
	want := time.Date(2026, 11, 30, 16, 0, 0, 0, time.UTC)
	for _, v := range []string{"2026-12-01T00:00:00+08:00", "2026-12-01T00:00:00 08:00", "2026-12-01T00:00:00.000 08:00"} {
		if got, err := parseTime("from", v); err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"2026-12-01 00:00:00 08:00", "2026-12-01T00:00:00  08:00", " 08:00", "2026-12-01T00:00:00 0800"} {
		if _, err := parseTime("from", v); err == nil {
			t.Errorf("parseTime(%q) accepted", v)
		}
	}
}
