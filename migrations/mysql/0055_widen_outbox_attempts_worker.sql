ALTER TABLE outbox_attempts MODIFY worker VARCHAR(80) NOT NULL;
