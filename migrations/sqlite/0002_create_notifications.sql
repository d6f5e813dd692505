CREATE TABLE notifications (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  notify_id TEXT NOT NULL,
  source TEXT NOT NULL,
  event_type TEXT NOT NULL,
  resource_type TEXT NOT NULL,
  summary TEXT NOT NULL DEFAULT '',
  out_trade_no TEXT NOT NULL,
  transaction_id TEXT NULL,
  out_refund_no TEXT NULL,
  plaintext TEXT NOT NULL,
  create_time DATETIME NULL,
  received_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_notifications_notify_id ON notifications (notify_id);
CREATE INDEX idx_notifications_out_trade_no ON notifications (out_trade_no);
CREATE INDEX idx_notifications_received_at ON notifications (received_at);
