ALTER TABLE api_keys
  ADD COLUMN active_name VARCHAR(64) GENERATED ALWAYS AS (CASE WHEN revoked_at IS NULL THEN name END) VIRTUAL,
  ADD UNIQUE KEY uk_api_keys_active_name (active_name);
