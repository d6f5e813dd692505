CREATE INDEX idx_payments_created_at ON payments (created_at);
