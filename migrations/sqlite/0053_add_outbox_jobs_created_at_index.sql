CREATE INDEX idx_outbox_jobs_created_at ON outbox_jobs (created_at);
