ALTER TABLE payments ADD COLUMN next_check_at DATETIME(6) NULL;
