-- Embedded (SQLite) schema. Timestamps are TEXT in one fixed format,
-- 'YYYY-MM-DDTHH:MM:SS.ffffffZ', so that text order is time order; ids are
-- 16-byte UUID blobs.

CREATE TABLE users (
    id          BLOB PRIMARY KEY NOT NULL,
    -- One account per address: a second POST (or a PUT onto a taken address)
    -- is answered 409 by matching this constraint.
    email       TEXT NOT NULL CONSTRAINT users_email_key UNIQUE,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- GET /api/v1/users lists newest first.
CREATE INDEX users_created_at_idx ON users (created_at DESC, id DESC);

CREATE TABLE events (
    id          BLOB PRIMARY KEY NOT NULL,
    -- An event always belongs to an existing user: a POST naming an unknown
    -- user is answered 404, and deleting a user deletes their events.
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
-- GET /api/v1/events lists newest first, optionally by user_id and/or type.
CREATE INDEX events_created_at_idx ON events (created_at DESC, id DESC);
CREATE INDEX events_user_id_idx ON events (user_id, created_at DESC, id DESC);
CREATE INDEX events_type_idx ON events (type, created_at DESC, id DESC);

-- Transactional outbox: a row is written in the same transaction as the
-- change it announces, and deleted once the bus has acknowledged it.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    BLOB NOT NULL,
    key           TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    -- A relay that claims a row leases it until this time.
    locked_until  TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0
);

-- Messages the processor has applied: a redelivered message finds its id
-- here and changes nothing.
CREATE TABLE processed_messages (
    message_id    BLOB PRIMARY KEY NOT NULL,
    processed_at  TEXT NOT NULL
);

-- What the processor derives per user. No foreign key to users: messages
-- about a user (user_deleted above all) are applied after the row is gone.
CREATE TABLE user_activity (
    user_id        BLOB PRIMARY KEY NOT NULL,
    total_events   INTEGER NOT NULL,
    last_event_at  TEXT NOT NULL
);

CREATE TABLE user_activity_types (
    user_id  BLOB NOT NULL,
    type     TEXT NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (user_id, type)
);
