ALTER TABLE outbox_attempts ADD COLUMN next_run_at DATETIME NULL;
