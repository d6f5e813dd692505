package ledger_test

import (
	"testing"

	"paygateway/ledger/ledgertest"
)

// TestMySQLSessionIsReadCommitted: locked reads and unique-key waits are
// reasoned about under READ COMMITTED (no gap locks).
func TestMySQLSessionIsReadCommitted(t *testing.T) {
	s := ledgertest.OpenMySQL(t)
	var level string
	if err := s.DB().Raw("SELECT @@SESSION.tx_isolation").Scan(&level).Error; err != nil {
		if err := s.DB().Raw("SELECT @@SESSION.transaction_isolation").Scan(&level).Error; err != nil {
			t.Fatal(err)
		}
	}
	if level != "READ-COMMITTED" {
		t.Fatalf("isolation = %q, want READ-COMMITTED", level)
	}
}
