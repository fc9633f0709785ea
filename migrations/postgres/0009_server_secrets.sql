-- Secrets every replica must share, made once by the first replica that
-- needs one (the cursors' MAC key, unless CURSOR_SECRET is set).
CREATE TABLE IF NOT EXISTS server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
