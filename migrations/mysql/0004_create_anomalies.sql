CREATE TABLE anomalies (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  kind VARCHAR(32) NOT NULL,
  ref VARCHAR(128) NOT NULL,
  out_trade_no VARCHAR(64) NOT NULL,
  detail TEXT NOT NULL,
  seen_count INT NOT NULL DEFAULT 1,
  first_seen DATETIME(6) NOT NULL,
  last_seen DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_anomalies_kind_ref (kind, ref),
  KEY idx_anomalies_out_trade_no (out_trade_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
