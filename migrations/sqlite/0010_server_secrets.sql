-- Secrets every replica must share (see the PostgreSQL migration of the
-- same name).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
