-- Exact totals for the list endpoints without counting rows at each call.
-- The store keeps them in the same transaction as the rows they count:
--   ('users',  nil,  '')    every user
--   ('events', nil,  '')    every event
--   ('events', user, '')    the user's events
--   ('events', nil,  type)  the events of a type
--   ('events', user, type)  both
-- (nil is the all-zero UUID.) Writers that bypass the store (the Go
-- service, a manual INSERT) are not counted: run only this service on the
-- database, or rebuild the table with the INSERTs below.
CREATE TABLE row_counts (
    scope    TEXT NOT NULL,
    user_id  UUID NOT NULL,
    type     TEXT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (scope, user_id, type)
);

INSERT INTO row_counts (scope, user_id, type, n)
SELECT 'users', '00000000-0000-0000-0000-000000000000', '', COUNT(*) FROM users;
INSERT INTO row_counts (scope, user_id, type, n)
SELECT 'events', '00000000-0000-0000-0000-000000000000', '', COUNT(*) FROM events;
INSERT INTO row_counts (scope, user_id, type, n)
SELECT 'events', user_id, '', COUNT(*) FROM events GROUP BY user_id;
INSERT INTO row_counts (scope, user_id, type, n)
SELECT 'events', '00000000-0000-0000-0000-000000000000', type, COUNT(*) FROM events GROUP BY type;
INSERT INTO row_counts (scope, user_id, type, n)
SELECT 'events', user_id, type, COUNT(*) FROM events GROUP BY user_id, type;

-- GET /api/v1/events?user_id=…&type=… lists newest first from an index too.
CREATE INDEX IF NOT EXISTS events_user_id_type_created_at_idx
    ON events (user_id, type, created_at DESC, id DESC);
