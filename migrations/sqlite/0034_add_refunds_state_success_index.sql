CREATE INDEX idx_refunds_state_success ON refunds (state, success_time);
