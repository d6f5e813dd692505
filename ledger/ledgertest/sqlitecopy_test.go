package ledgertest

import (
	"slices"
	"testing"

	"paygateway/ledger"
)

// TestCopyMatchesAMigratedDatabase: a copy of the template has the schema
// of a database migrated afresh, every table, column (a table's SQL names
// them), index, automatic index and applied migration, so a test on a copy
// tests what a migrated database holds.
func TestCopyMatchesAMigratedDatabase(t *testing.T) {
	want := schemaOf(t, OpenSQLite(t))
	got := schemaOf(t, OpenSQLiteCopy(t))
	if len(want) < 20 {
		t.Fatalf("a migrated database has %d schema entries: %v", len(want), want)
	}
	if !slices.Equal(got, want) {
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("the copy lacks %s", w)
			}
		}
		for _, g := range got {
			if !slices.Contains(want, g) {
				t.Errorf("the copy has %s, a migrated database does not", g)
			}
		}
		t.Fatalf("the copy's schema differs (%d entries, want %d)", len(got), len(want))
	}
}

// schemaOf lists the database's schema objects and applied migrations.
func schemaOf(t *testing.T, s *ledger.Store) []string {
	t.Helper()
	var out []string
	err := s.DB().Raw("SELECT type || ' ' || name || ' on ' || tbl_name || ': ' || COALESCE(sql, '(automatic)') FROM sqlite_master " +
		"UNION ALL SELECT 'migration ' || version || ' ' || name FROM schema_migrations ORDER BY 1").Scan(&out).Error
	if err != nil {
		t.Fatal(err)
	}
	return out
}
