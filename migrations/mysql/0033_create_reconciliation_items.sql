CREATE TABLE reconciliation_items (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  reconciliation_id BIGINT UNSIGNED NOT NULL,
  kind VARCHAR(32) NOT NULL,
  out_trade_no VARCHAR(64) NOT NULL DEFAULT '',
  transaction_id VARCHAR(64) NOT NULL DEFAULT '',
  out_refund_no VARCHAR(64) NOT NULL DEFAULT '',
  bill_state VARCHAR(16) NOT NULL DEFAULT '',
  bill_amount BIGINT NULL,
  ledger_state VARCHAR(16) NOT NULL DEFAULT '',
  ledger_amount BIGINT NULL,
  bill_line TEXT NOT NULL,
  repair VARCHAR(16) NOT NULL DEFAULT '',
  repair_detail VARCHAR(512) NOT NULL DEFAULT '',
  PRIMARY KEY (id),
  KEY idx_reconciliation_items_rec (reconciliation_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
