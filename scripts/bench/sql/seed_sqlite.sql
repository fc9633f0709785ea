-- Seeds the service's SQLite database (already migrated by the service)
-- with users and events number @from to @to, set beforehand with
--   .parameter set @from 1
--   .parameter set @to 10000
-- The same data as seed_postgres.sql: user i is seed-<i>@bench.example,
-- event i belongs to the user 1 + i % 100 and has type type<(i / 100) % 10>.
-- SQLite has no hash function, so ids are random and the owners of the
-- events are found by email.
PRAGMA busy_timeout = 30000;
PRAGMA synchronous = OFF;
BEGIN IMMEDIATE;
WITH RECURSIVE s(i) AS (SELECT @from UNION ALL SELECT i + 1 FROM s WHERE i < @to)
INSERT INTO users (id, email, first_name, last_name, created_at, updated_at)
SELECT randomblob(16), 'seed-' || i || '@bench.example', 'Seed', 'User ' || i,
       strftime('%Y-%m-%dT%H:%M:%S', 'now', printf('-%d seconds', i)) || '.000000Z',
       strftime('%Y-%m-%dT%H:%M:%S', 'now', printf('-%d seconds', i)) || '.000000Z'
FROM s;
CREATE TEMP TABLE owners AS
  SELECT n, (SELECT id FROM users WHERE email = 'seed-' || n || '@bench.example') AS id
  FROM (WITH RECURSIVE o(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM o WHERE n < 100) SELECT n FROM o);
WITH RECURSIVE s(i) AS (SELECT @from UNION ALL SELECT i + 1 FROM s WHERE i < @to)
INSERT INTO events (id, user_id, type, data, created_at)
SELECT randomblob(16), owners.id, 'type' || ((i / 100) % 10), '{"seed":' || i || '}',
       strftime('%Y-%m-%dT%H:%M:%S', 'now', printf('-%d seconds', i)) || '.000000Z'
FROM s JOIN owners ON owners.n = 1 + i % 100;
COMMIT;
