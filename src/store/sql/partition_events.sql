-- events becomes partitioned by created_at, so that expired events
-- (EVENTS_RETENTION) leave by dropping whole partitions, not by deleting
-- rows one by one (see store/partitions.rs). Run once, in one transaction,
-- by the first start with EVENTS_RETENTION set (store/sql/retention.rs);
-- without a retention events stays one table, which lists read faster.
--
-- The rows already there stay where they are: the table is renamed
-- events_history and attached as the partition of everything before the
-- next hour (or after its newest row). The service creates the partitions
-- from there on, ahead of time. A partitioned table's primary key must hold
-- its partition key: it becomes (id, created_at), under the Go service's
-- name; ids stay unique (UUIDs, one created_at each).
--
-- Cost, measured on 1M rows: 0.6 to 1.2 s, all of it under an ACCESS
-- EXCLUSIVE lock on events (reads and writes of events wait); most of it
-- rebuilds the primary key. It grows with the table: plan for about a
-- second per million events.

ALTER TABLE events RENAME TO events_history;
ALTER INDEX events_created_at_idx RENAME TO events_history_created_at_idx;
ALTER INDEX events_user_id_created_at_idx RENAME TO events_history_user_id_created_at_idx;
ALTER INDEX events_type_created_at_idx RENAME TO events_history_type_created_at_idx;
ALTER INDEX events_user_id_type_created_at_idx RENAME TO events_history_user_id_type_created_at_idx;
ALTER TABLE events_history DROP CONSTRAINT events_pkey;
ALTER TABLE events_history ADD CONSTRAINT events_history_pkey PRIMARY KEY (id, created_at);

CREATE TABLE events (
    id          UUID NOT NULL,
    user_id     UUID NOT NULL,
    type        VARCHAR(100) NOT NULL,
    data        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

DO $$
DECLARE
    cut timestamptz;
BEGIN
    SELECT date_trunc('hour', greatest(now(), max(created_at))) + interval '1 hour'
      INTO cut FROM events_history;
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_history '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', cut);
END $$;

-- Each attaches the history's index of the same columns (no rebuild).
CREATE INDEX events_created_at_idx ON events (created_at DESC, id DESC);
CREATE INDEX events_user_id_created_at_idx ON events (user_id, created_at DESC, id DESC);
CREATE INDEX events_type_created_at_idx ON events (type, created_at DESC, id DESC);
CREATE INDEX events_user_id_type_created_at_idx
    ON events (user_id, type, created_at DESC, id DESC);

-- The foreign key moves to the partitioned table, which gives each
-- partition its own (checking the history's rows once more).
ALTER TABLE events_history DROP CONSTRAINT events_user_id_fkey;
ALTER TABLE events ADD CONSTRAINT events_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
