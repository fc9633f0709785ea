-- Rows seeded by SQL bypass the list totals the service keeps as it writes
-- (row_counts, see migrations/sqlite/0003_row_counts.sql): count them again.
BEGIN;
DELETE FROM row_counts;
INSERT INTO row_counts (scope, user_id, type, n) SELECT 'users', X'00000000000000000000000000000000', '', COUNT(*) FROM users;
INSERT INTO row_counts (scope, user_id, type, n) SELECT 'events', X'00000000000000000000000000000000', '', COUNT(*) FROM events;
INSERT INTO row_counts (scope, user_id, type, n) SELECT 'events', user_id, '', COUNT(*) FROM events GROUP BY user_id;
INSERT INTO row_counts (scope, user_id, type, n) SELECT 'events', X'00000000000000000000000000000000', type, COUNT(*) FROM events GROUP BY type;
INSERT INTO row_counts (scope, user_id, type, n) SELECT 'events', user_id, type, COUNT(*) FROM events GROUP BY user_id, type;
COMMIT;
