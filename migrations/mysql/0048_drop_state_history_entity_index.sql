DROP INDEX idx_state_history_entity ON state_history;
