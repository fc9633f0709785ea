-- pgbench script: the transaction of POST /api/v1/users, a user and the
-- outbox row announcing it, committed together. Run against a scratch
-- database holding the service's schema (migrations/postgres/).
BEGIN;
INSERT INTO users (id, email, first_name, last_name, created_at, updated_at)
  VALUES (gen_random_uuid(), gen_random_uuid()::text || '@pgbench.example', 'Bench', 'User', now(), now());
INSERT INTO outbox (message_id, key, payload, created_at)
  VALUES (gen_random_uuid(), gen_random_uuid()::text,
          '{"id":"00000000-0000-0000-0000-000000000000","user_id":"00000000-0000-0000-0000-000000000000","type":"user_created","data":"{}","timestamp":"2026-01-01T00:00:00.000000Z"}',
          now());
END;
