-- The MySQL twin widens worker to 80 characters; SQLite's TEXT has no length to widen.
UPDATE outbox_attempts SET worker = worker WHERE 0;
