CREATE TABLE outbox_attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  worker TEXT NOT NULL,
  outcome TEXT NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  started_at DATETIME NOT NULL,
  finished_at DATETIME NOT NULL
);
CREATE INDEX idx_outbox_attempts_job ON outbox_attempts (job_id, id);
