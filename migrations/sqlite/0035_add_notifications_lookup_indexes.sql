CREATE INDEX idx_notifications_transaction_id ON notifications (transaction_id);
CREATE INDEX idx_notifications_out_refund_no ON notifications (out_refund_no);
