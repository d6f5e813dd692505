UPDATE payments SET registered_openid = payer_openid WHERE registered = 1 AND registered_openid IS NULL;
