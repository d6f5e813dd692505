CREATE TABLE state_history (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  entity VARCHAR(16) NOT NULL,
  entity_key VARCHAR(64) NOT NULL,
  out_trade_no VARCHAR(64) NOT NULL,
  from_state VARCHAR(16) NOT NULL,
  to_state VARCHAR(16) NOT NULL,
  source VARCHAR(16) NOT NULL,
  ref VARCHAR(128) NOT NULL DEFAULT '',
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  KEY idx_state_history_entity (entity, entity_key, id),
  KEY idx_state_history_out_trade_no (out_trade_no, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
