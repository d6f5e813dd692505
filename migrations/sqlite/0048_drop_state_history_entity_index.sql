DROP INDEX idx_state_history_entity;
