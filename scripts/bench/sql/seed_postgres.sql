-- Seeds the service's PostgreSQL database (already migrated by the
-- service) with users and events number :from to :to, as psql variables:
--   psql -v from=1 -v to=10000 -f seed_postgres.sql
-- User i has email seed-<i>@bench.example and id md5('seed-user-<i>');
-- event i belongs to one of the first 100 users (1 + i % 100) and has type
-- type<(i / 100) % 10>, so the user_id and type filters each match a share
-- of the table that grows with it. Higher i are older.
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO users (id, email, first_name, last_name, created_at, updated_at)
SELECT md5('seed-user-' || i)::uuid, 'seed-' || i || '@bench.example', 'Seed', 'User ' || i,
       now() - i * interval '1 second', now() - i * interval '1 second'
FROM generate_series(:from::int, :to::int) AS i;
INSERT INTO events (id, user_id, type, data, created_at)
SELECT md5('seed-event-' || i)::uuid, md5('seed-user-' || (1 + i % 100))::uuid,
       'type' || ((i / 100) % 10), '{"seed":' || i || '}', now() - i * interval '1 second'
FROM generate_series(:from::int, :to::int) AS i;
COMMIT;
-- What autovacuum would do soon after such a load, done now so that the
-- plans measured are the ones a running system settles on.
ANALYZE users;
ANALYZE events;
