-- API keys of AUTH_MODE=api-key, created with `highload api-key create`.
-- The key itself is never stored: key_hash is the hex SHA-256 of the whole
-- key (random 256 bits, so a fast hash suffices), unique so that a look-up
-- by hash finds one key. shown keeps the first characters, to tell keys
-- apart in a list. scopes is a comma-separated subset of read,write,admin.
-- A revoked key keeps its row (revoked_at set), for the record.
CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    shown       TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
