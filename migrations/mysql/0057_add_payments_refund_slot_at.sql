ALTER TABLE payments ADD COLUMN refund_slot_at DATETIME(6) NULL;
