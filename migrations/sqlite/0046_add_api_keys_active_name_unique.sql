ALTER TABLE api_keys ADD COLUMN active_name TEXT GENERATED ALWAYS AS (CASE WHEN revoked_at IS NULL THEN name END) VIRTUAL;
CREATE UNIQUE INDEX uk_api_keys_active_name ON api_keys (active_name);
