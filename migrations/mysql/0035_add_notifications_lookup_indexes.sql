ALTER TABLE notifications ADD KEY idx_notifications_transaction_id (transaction_id), ADD KEY idx_notifications_out_refund_no (out_refund_no);
