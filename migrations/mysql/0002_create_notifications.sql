CREATE TABLE notifications (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  notify_id VARCHAR(128) NOT NULL,
  source VARCHAR(16) NOT NULL,
  event_type VARCHAR(32) NOT NULL,
  resource_type VARCHAR(32) NOT NULL,
  summary VARCHAR(255) NOT NULL DEFAULT '',
  out_trade_no VARCHAR(64) NOT NULL,
  transaction_id VARCHAR(64) NULL,
  out_refund_no VARCHAR(64) NULL,
  plaintext TEXT NOT NULL,
  create_time DATETIME(6) NULL,
  received_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_notifications_notify_id (notify_id),
  KEY idx_notifications_out_trade_no (out_trade_no),
  KEY idx_notifications_received_at (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
