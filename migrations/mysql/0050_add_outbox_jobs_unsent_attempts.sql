ALTER TABLE outbox_jobs ADD COLUMN unsent_attempts INT NOT NULL DEFAULT 0;
