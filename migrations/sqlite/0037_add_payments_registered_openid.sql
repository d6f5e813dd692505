ALTER TABLE payments ADD COLUMN registered_openid TEXT NULL;
