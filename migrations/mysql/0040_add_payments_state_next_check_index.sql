CREATE INDEX idx_payments_state_next_check ON payments (state, next_check_at);
