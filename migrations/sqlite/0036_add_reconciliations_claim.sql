ALTER TABLE reconciliations ADD COLUMN claimed_by TEXT NULL;
ALTER TABLE reconciliations ADD COLUMN claimed_until DATETIME NULL;
