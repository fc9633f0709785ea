//! Keeping events for `EVENTS_RETENTION`: the partitions of `events` on
//! PostgreSQL (see [`crate::store::partitions`]) and the removal of
//! expired events, with what they counted in the lists' totals.
//!
//! A partition whose events are all expired is dropped whole, in one
//! transaction that first reads what it holds per user and type, then
//! drops it, then takes that from the totals:
//! - the partition is locked against writes (SHARE) before it is read, so
//!   a user deleted meanwhile cannot take the same events from the totals
//!   twice (its delete waits, and then finds them gone);
//! - the drop (which locks `events` for a moment) comes before the totals,
//!   so the totals' rows, which every write updates, are locked only once
//!   no write is in flight; otherwise a write waiting for them while
//!   holding `events` would deadlock with the drop.
//!
//! Expired events left elsewhere (the partition that straddles the cut,
//! and every event on SQLite) are deleted a batch at a time, in the same
//! transaction as their totals.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::SqlStore;
use super::dialect::Dialect;
use crate::store::StoreResult;
use crate::store::counts::Counts;
use crate::store::partitions;

/// Taken for the length of a transaction that creates or drops partitions,
/// so that replicas of the service do it one at a time.
pub(crate) const PARTITIONS_LOCK: i64 = 0x6869_6768_6c6f_6164;

/// How long a partition's creation or drop waits for `events` before it
/// gives up until the next round, rather than queueing every read behind
/// it.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

/// Makes `events` partitioned, in place (the rows it has become the
/// history partition).
pub(crate) const PARTITION_EVENTS: &str = include_str!("partition_events.sql");

/// Whether `events` is partitioned.
pub(crate) const PARTITIONED: &str =
    "SELECT relkind = 'p' FROM pg_class WHERE oid = 'events'::regclass";

/// Each partition of `events` and where its range ends, earliest first.
const PARTITIONS: &str = "SELECT c.relname::text, \
     (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz \
     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
     WHERE i.inhparent = 'events'::regclass ORDER BY 2";

with_driver_bounds! {
[impl<D: Dialect> SqlStore<D>] {
    async fn is_partitioned(tx: &mut <D::Db as Database>::Connection) -> StoreResult<bool> {
        sqlx::query_scalar(PARTITIONED)
            .persistent(false)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| D::classify(e, "failed to read how events is stored"))
    }

    /// Creates the partitions that `now` plus [`partitions::ahead`] needs,
    /// if `events` is partitioned; how many.
    pub(super) async fn create_partitions(&self, now: DateTime<Utc>, width: Duration) -> StoreResult<usize> {
        let mut tx = Self::begin(&self.writer, None).await?;
        Self::lock_partitions(&mut tx).await?;
        if !Self::is_partitioned(&mut tx).await? {
            return Ok(0);
        }
        let existing = Self::partitions(&mut tx).await?;
        let ranges = partitions::to_create(existing.last().map(|(_, end)| *end), now, width);
        for (start, end) in &ranges {
            let create = format!(
                "CREATE TABLE {} PARTITION OF events FOR VALUES FROM ('{}') TO ('{}')",
                partitions::name(*start),
                start.to_rfc3339(),
                end.to_rfc3339()
            );
            sqlx::query(&create)
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(|e| D::classify(e, "failed to create a partition of events"))?;
        }
        tx.commit()
            .await
            .map_err(|e| D::classify(e, "failed to create the partitions of events"))?;
        if !ranges.is_empty() {
            tracing::info!(
                created = ranges.len(),
                until = %ranges.last().map(|(_, end)| *end).unwrap_or(now),
                "created partitions of events"
            );
        }
        Ok(ranges.len())
    }

    /// Drops the partitions whose events were all created before `before`;
    /// how many events they held.
    pub(super) async fn drop_partitions_before(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let mut removed = 0;
        loop {
            let mut tx = Self::begin(&self.writer, None).await?;
            Self::lock_partitions(&mut tx).await?;
            let existing = Self::partitions(&mut tx).await?;
            // The last partition stays: new partitions follow its end.
            let Some((name, _)) = existing
                .iter()
                .take(existing.len().saturating_sub(1))
                .find(|(_, end)| *end <= before)
            else {
                return Ok(removed);
            };
            sqlx::query(&format!("LOCK TABLE {name} IN SHARE MODE"))
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(|e| D::classify(e, "failed to lock an expired partition"))?;
            let held: Vec<(Uuid, String, i64)> = sqlx::query_as(&format!(
                "SELECT user_id, type, count(*) FROM {name} GROUP BY user_id, type"
            ))
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| D::classify(e, "failed to count an expired partition's events"))?;
            sqlx::query(&format!("DROP TABLE {name}"))
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(|e| D::classify(e, "failed to drop an expired partition"))?;
            let mut counts = Counts::default();
            let mut events = 0;
            for (user_id, event_type, n) in held {
                counts.add_event(user_id, &event_type, -n);
                events += n;
            }
            Self::commit(tx, counts).await?;
            tracing::info!(partition = %name, events, "dropped an expired partition of events");
            removed += usize::try_from(events).unwrap_or_default();
        }
    }

    /// Deletes up to `limit` events created before `before`, and takes
    /// them from the totals; how many.
    pub(super) async fn delete_expired_events(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<usize> {
        // Events of a user whose delete is still under way (SQLite) are
        // out of the totals already: that delete removes them.
        let visible = Self::visible_events().map(|c| format!(" AND {c}")).unwrap_or_default();
        let delete = format!(
            "DELETE FROM events WHERE created_at < $1 AND id IN \
             (SELECT id FROM events WHERE created_at < $1{visible} LIMIT $2) \
             RETURNING user_id, type"
        );
        let mut tx = Self::begin(&self.writer, None).await?;
        let deleted: Vec<(Uuid, String)> = sqlx::query_as(&delete)
            .bind(D::time(&before))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| D::classify(e, "failed to delete expired events"))?;
        let mut counts = Counts::default();
        for (user_id, event_type) in &deleted {
            counts.add_event(*user_id, event_type, -1);
        }
        Self::commit(tx, counts).await?;
        Ok(deleted.len())
    }

    async fn lock_partitions(tx: &mut <D::Db as Database>::Connection) -> StoreResult<()> {
        for statement in [LOCK_TIMEOUT, "SELECT pg_advisory_xact_lock($1)"] {
            let mut query = sqlx::query(statement).persistent(false);
            if statement.contains("$1") {
                query = query.bind(PARTITIONS_LOCK);
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(|e| D::classify(e, "failed to lock the partitions of events"))?;
        }
        Ok(())
    }

    async fn partitions(
        tx: &mut <D::Db as Database>::Connection,
    ) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        sqlx::query_as(PARTITIONS)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| D::classify(e, "failed to list the partitions of events"))
    }
}
}
