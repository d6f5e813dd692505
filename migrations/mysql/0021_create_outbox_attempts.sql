CREATE TABLE outbox_attempts (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  job_id BIGINT UNSIGNED NOT NULL,
  attempt INT NOT NULL,
  worker VARCHAR(64) NOT NULL,
  outcome VARCHAR(16) NOT NULL,
  error VARCHAR(512) NOT NULL DEFAULT '',
  started_at DATETIME(6) NOT NULL,
  finished_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  KEY idx_outbox_attempts_job (job_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
