-- Accounts of AUTH_MODE=accounts, and their refresh tokens.
--
-- auth_users has the Go service's columns and is created only if missing,
-- so that its accounts carry over: a bcrypt password_hash it wrote is
-- verified at the next login and replaced by an Argon2id one. Emails are
-- stored in the API's canonical form (lowercase, punycode domain).
CREATE TABLE IF NOT EXISTS auth_users (
    id             UUID PRIMARY KEY,
    email          VARCHAR(255) NOT NULL UNIQUE,
    first_name     VARCHAR(100) NOT NULL DEFAULT '',
    last_name      VARCHAR(100) NOT NULL DEFAULT '',
    role           VARCHAR(20) NOT NULL DEFAULT 'user',
    is_active      BOOLEAN NOT NULL DEFAULT true,
    password_hash  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A refresh token is stored only as the hex SHA-256 of the token (random
-- 256 bits). Each use replaces it with a new one of the same family
-- (used_at set); a used token presented again revokes the whole family
-- (revoked_at set on each), as does logout.
CREATE TABLE auth_refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    family       UUID NOT NULL,
    user_id      UUID NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    used_at      TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX auth_refresh_tokens_family_idx ON auth_refresh_tokens (family);
CREATE INDEX auth_refresh_tokens_user_idx ON auth_refresh_tokens (user_id);

-- Keys created over HTTP may expire.
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMPTZ;
