-- Who holds an outbox row's lease: a fresh id per claim. Leases are short
-- and renewed while the relay still works on its batch, so that rows
-- claimed by a process that died are claimed again within seconds. A
-- relay renews and releases only the rows that still carry its id.
ALTER TABLE outbox ADD COLUMN locked_by BLOB;

-- Users deleted whose events are still being removed. Deleting a user
-- with many events in one transaction would hold SQLite's single write
-- lock until every row is gone, stalling every other write; so a delete
-- removes the user (and its totals) at once and lists it here, and the
-- store removes its events afterwards in short transactions of a bounded
-- number of rows, then the user's row here. Until then every read hides
-- the events of the users listed here.
--
-- This is why the store's writer connection runs without foreign key
-- enforcement: events' ON DELETE CASCADE would delete every row in the
-- user's transaction. The store checks that an event's user exists in the
-- statement that inserts it, on the single writer, so nothing else relied
-- on the constraint.
CREATE TABLE deleted_users (
    user_id  BLOB PRIMARY KEY NOT NULL
) WITHOUT ROWID;
