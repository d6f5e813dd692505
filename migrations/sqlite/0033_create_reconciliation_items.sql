CREATE TABLE reconciliation_items (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  reconciliation_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  out_trade_no TEXT NOT NULL DEFAULT '',
  transaction_id TEXT NOT NULL DEFAULT '',
  out_refund_no TEXT NOT NULL DEFAULT '',
  bill_state TEXT NOT NULL DEFAULT '',
  bill_amount INTEGER NULL,
  ledger_state TEXT NOT NULL DEFAULT '',
  ledger_amount INTEGER NULL,
  bill_line TEXT NOT NULL,
  repair TEXT NOT NULL DEFAULT '',
  repair_detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX idx_reconciliation_items_rec ON reconciliation_items (reconciliation_id, id);
