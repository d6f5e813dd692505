CREATE TABLE reconciliations (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  bill_date TEXT NOT NULL,
  status TEXT NOT NULL,
  bill_payments INTEGER NOT NULL DEFAULT 0,
  bill_refunds INTEGER NOT NULL DEFAULT 0,
  ledger_payments INTEGER NOT NULL DEFAULT 0,
  ledger_refunds INTEGER NOT NULL DEFAULT 0,
  bill_paid INTEGER NOT NULL DEFAULT 0,
  bill_refunded INTEGER NOT NULL DEFAULT 0,
  ledger_paid INTEGER NOT NULL DEFAULT 0,
  ledger_refunded INTEGER NOT NULL DEFAULT 0,
  mismatches INTEGER NOT NULL DEFAULT 0,
  repaired INTEGER NOT NULL DEFAULT 0,
  runs INTEGER NOT NULL DEFAULT 1,
  requested_by TEXT NOT NULL DEFAULT '',
  created_at DATETIME NOT NULL,
  updated_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_reconciliations_bill_date ON reconciliations (bill_date);
