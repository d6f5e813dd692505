ALTER TABLE payments ADD COLUMN registered_openid VARCHAR(128) NULL;
