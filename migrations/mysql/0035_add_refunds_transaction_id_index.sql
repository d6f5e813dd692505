CREATE INDEX idx_refunds_transaction_id ON refunds (transaction_id);
