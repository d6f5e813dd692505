CREATE TABLE refunds (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  out_refund_no TEXT NOT NULL,
  out_trade_no TEXT NOT NULL,
  transaction_id TEXT NULL,
  refund_id TEXT NULL,
  state TEXT NOT NULL,
  amount INTEGER NOT NULL,
  total INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  requester TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  next_check_at DATETIME NULL,
  success_time DATETIME NULL,
  version INTEGER NOT NULL DEFAULT 0,
  created_at DATETIME NOT NULL,
  updated_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_refunds_out_refund_no ON refunds (out_refund_no);
CREATE UNIQUE INDEX uk_refunds_refund_id ON refunds (refund_id);
CREATE INDEX idx_refunds_out_trade_no ON refunds (out_trade_no);
CREATE INDEX idx_refunds_state_check ON refunds (state, next_check_at);
CREATE INDEX idx_refunds_created_at ON refunds (created_at);
