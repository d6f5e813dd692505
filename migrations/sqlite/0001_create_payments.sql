CREATE TABLE payments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  out_trade_no TEXT NOT NULL,
  transaction_id TEXT NULL,
  state TEXT NOT NULL,
  registered INTEGER NOT NULL DEFAULT 0,
  expected_amount INTEGER NULL,
  amount_total INTEGER NULL,
  payer_total INTEGER NULL,
  refunded_total INTEGER NOT NULL DEFAULT 0,
  currency TEXT NOT NULL DEFAULT 'CNY',
  payer_openid TEXT NULL,
  appid TEXT NULL,
  mchid TEXT NULL,
  expire_at DATETIME NULL,
  success_time DATETIME NULL,
  version INTEGER NOT NULL DEFAULT 0,
  created_at DATETIME NOT NULL,
  updated_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_payments_out_trade_no ON payments (out_trade_no);
CREATE UNIQUE INDEX uk_payments_transaction_id ON payments (transaction_id);
CREATE INDEX idx_payments_state_created ON payments (state, created_at);
CREATE INDEX idx_payments_payer ON payments (payer_openid);
CREATE INDEX idx_payments_success_time ON payments (success_time);
