ALTER TABLE reconciliations
  ADD COLUMN claimed_by VARCHAR(64) NULL,
  ADD COLUMN claimed_until DATETIME(6) NULL;
