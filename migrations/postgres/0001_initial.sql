-- PostgreSQL schema.
--
-- users and events are created only if missing, with the Go service's
-- column types and constraint names, so that this service can take over a
-- database the Go service created (its rows stay readable, its email
-- uniqueness and cascade rules keep working).

CREATE TABLE IF NOT EXISTS users (
    id          UUID PRIMARY KEY,
    email       VARCHAR(255) NOT NULL,
    first_name  VARCHAR(100) NOT NULL,
    last_name   VARCHAR(100) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- One account per address: a second POST (or a PUT onto a taken
    -- address) is answered 409 by matching this constraint's name.
    CONSTRAINT users_email_key UNIQUE (email)
);
-- GET /api/v1/users lists newest first.
CREATE INDEX IF NOT EXISTS users_created_at_idx ON users (created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS events (
    id          UUID PRIMARY KEY,
    -- An event always belongs to an existing user: a POST naming an unknown
    -- user violates this and is answered 404; deleting a user deletes their
    -- events.
    user_id     UUID NOT NULL CONSTRAINT events_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    type        VARCHAR(100) NOT NULL,
    data        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- GET /api/v1/events lists newest first, optionally by user_id and/or type.
CREATE INDEX IF NOT EXISTS events_created_at_idx ON events (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_user_id_created_at_idx ON events (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_type_created_at_idx ON events (type, created_at DESC, id DESC);

-- Transactional outbox: a row is written in the same transaction as the
-- change it announces and deleted once the bus has acknowledged it. Relays
-- on several replicas claim disjoint batches (FOR UPDATE SKIP LOCKED) and
-- lease them until locked_until.
CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    UUID NOT NULL,
    key           TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_until  TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0
);

-- Messages the processor has applied: a redelivered message finds its id
-- here and changes nothing.
CREATE TABLE processed_messages (
    message_id    UUID PRIMARY KEY,
    processed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the processor derives per user. No foreign key to users: messages
-- about a user (user_deleted above all) are applied after the row is gone.
CREATE TABLE user_activity (
    user_id        UUID PRIMARY KEY,
    total_events   BIGINT NOT NULL,
    last_event_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE user_activity_types (
    user_id  UUID NOT NULL,
    type     TEXT NOT NULL,
    count    BIGINT NOT NULL,
    PRIMARY KEY (user_id, type)
);
