package ledger

import (
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
)

// TestTimeFiltersBindWholeMicroseconds: a list's from and to are bound
// as the first microsecond at or after them. Rows hold microseconds, and
// MariaDB cuts (MySQL rounds) a finer bound to its column: from
// 00:00:00.0000004 was read as 00:00:00, so the row of that microsecond,
// before from, was listed (and to dropped the row before it), while
// SQLite compared the bound as given.
func TestTimeFiltersBindWholeMicroseconds(t *testing.T) {
	db, err := gorm.Open(sqlite.Open(":memory:"), &gorm.Config{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct{ at, want time.Time }{
		{base.Add(400), base.Add(time.Microsecond)},
		{base.Add(time.Microsecond - 1), base.Add(time.Microsecond)},
		{base.Add(time.Microsecond), base.Add(time.Microsecond)},
		{base, base},
	} {
		var rows []paymentRow
		stmt := paymentsSpec.during(db.Model(&paymentRow{}), ListQuery{From: c.at, To: c.at}).Find(&rows).Statement
		if len(stmt.Vars) != 2 {
			t.Fatalf("vars %v, want from and to", stmt.Vars)
		}
		for _, v := range stmt.Vars {
			if got, _ := v.(time.Time); !got.Equal(c.want) {
				t.Errorf("bound %v for %v, want %v", v, c.at, c.want)
			}
		}
	}
}
