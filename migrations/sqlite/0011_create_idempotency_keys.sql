CREATE TABLE idempotency_keys (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  scope TEXT NOT NULL,
  idem_key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  state TEXT NOT NULL,
  status_code INTEGER NOT NULL DEFAULT 0,
  response_body TEXT NULL,
  resource_key TEXT NULL,
  locked_until DATETIME NULL,
  created_at DATETIME NOT NULL,
  expires_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_idempotency_keys_scope_key ON idempotency_keys (scope, idem_key);
CREATE INDEX idx_idempotency_keys_expires_at ON idempotency_keys (expires_at);
