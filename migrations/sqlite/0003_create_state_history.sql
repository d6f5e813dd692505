CREATE TABLE state_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  entity TEXT NOT NULL,
  entity_key TEXT NOT NULL,
  out_trade_no TEXT NOT NULL,
  from_state TEXT NOT NULL,
  to_state TEXT NOT NULL,
  source TEXT NOT NULL,
  ref TEXT NOT NULL DEFAULT '',
  created_at DATETIME NOT NULL
);
CREATE INDEX idx_state_history_entity ON state_history (entity, entity_key, id);
CREATE INDEX idx_state_history_out_trade_no ON state_history (out_trade_no, id);
