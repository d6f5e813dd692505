ALTER TABLE payments ADD COLUMN refund_sent_at DATETIME NULL;
