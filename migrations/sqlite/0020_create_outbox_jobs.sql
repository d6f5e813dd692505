CREATE TABLE outbox_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  job_key TEXT NOT NULL,
  out_trade_no TEXT NOT NULL,
  out_refund_no TEXT NULL,
  payload TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  next_run_at DATETIME NOT NULL,
  lease_owner TEXT NULL,
  lease_until DATETIME NULL,
  first_attempt_at DATETIME NULL,
  done_at DATETIME NULL,
  created_at DATETIME NOT NULL,
  updated_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_outbox_jobs_job_key ON outbox_jobs (job_key);
CREATE INDEX idx_outbox_jobs_due ON outbox_jobs (state, next_run_at);
CREATE INDEX idx_outbox_jobs_out_trade_no ON outbox_jobs (out_trade_no);
