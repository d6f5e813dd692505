CREATE INDEX idx_refunds_state_accepted ON refunds (state, accepted_at);
