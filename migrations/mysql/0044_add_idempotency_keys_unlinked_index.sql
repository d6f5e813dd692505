CREATE INDEX idx_idempotency_keys_unlinked ON idempotency_keys (resource_key, expires_at);
