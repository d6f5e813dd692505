CREATE TABLE audit_log (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  principal VARCHAR(64) NOT NULL,
  role VARCHAR(16) NOT NULL,
  method VARCHAR(8) NOT NULL,
  path VARCHAR(2048) NOT NULL,
  status INT NOT NULL DEFAULT 0,
  request_id VARCHAR(64) NOT NULL DEFAULT '',
  remote_addr VARCHAR(64) NOT NULL DEFAULT '',
  created_at DATETIME(6) NOT NULL,
  finished_at DATETIME(6) NULL,
  PRIMARY KEY (id),
  KEY idx_audit_log_created_at (created_at),
  KEY idx_audit_log_principal (principal, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
