CREATE UNIQUE INDEX uk_state_history_entity_state ON state_history (entity, entity_key, to_state);
