ALTER TABLE payments ADD COLUMN refund_slot_at DATETIME NULL;
