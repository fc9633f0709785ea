-- Idempotency keys of POST requests: the first response to a key is
-- replayed when the key comes again with the same request. A row is
-- written in the same transaction as the effect it records, so that a
-- replica that sees the key sees the effect too; the primary key makes a
-- second transaction with the same key wait for the first and then change
-- nothing.
CREATE TABLE idempotency_keys (
    -- Whose key: a hash of the client's credential, or '' without one.
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    -- A hash of the request's method, path and body: the key sent with
    -- another request is refused (422), not replayed.
    request_hash  TEXT NOT NULL,
    -- The response to replay.
    status        BIGINT NOT NULL,
    response      TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    -- After this the key may be used again, and the purge deletes it.
    expires_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
-- The purge finds expired keys without a scan.
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
