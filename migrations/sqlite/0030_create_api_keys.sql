CREATE TABLE api_keys (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  key_hash TEXT NOT NULL,
  created_at DATETIME NOT NULL,
  revoked_at DATETIME NULL,
  last_used_at DATETIME NULL
);
CREATE UNIQUE INDEX uk_api_keys_key_hash ON api_keys (key_hash);
CREATE INDEX idx_api_keys_name ON api_keys (name);
