-- Accounts of AUTH_MODE=accounts, and their refresh tokens (see the
-- PostgreSQL migration of the same name). Times are RFC 3339 text of fixed
-- width, as elsewhere in this database.
CREATE TABLE auth_users (
    id             BLOB PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    first_name     TEXT NOT NULL DEFAULT '',
    last_name      TEXT NOT NULL DEFAULT '',
    role           TEXT NOT NULL DEFAULT 'user',
    is_active      INTEGER NOT NULL DEFAULT 1,
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE auth_refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    family       BLOB NOT NULL,
    user_id      BLOB NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT,
    revoked_at   TEXT
);
CREATE INDEX auth_refresh_tokens_family_idx ON auth_refresh_tokens (family);
CREATE INDEX auth_refresh_tokens_user_idx ON auth_refresh_tokens (user_id);

ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
