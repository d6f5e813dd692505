CREATE TABLE anomalies (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  ref TEXT NOT NULL,
  out_trade_no TEXT NOT NULL,
  detail TEXT NOT NULL,
  seen_count INTEGER NOT NULL DEFAULT 1,
  first_seen DATETIME NOT NULL,
  last_seen DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_anomalies_kind_ref ON anomalies (kind, ref);
CREATE INDEX idx_anomalies_out_trade_no ON anomalies (out_trade_no);
