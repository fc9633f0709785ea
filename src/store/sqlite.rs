//! SQLite: the embedded default, one file under `./data/`.
//!
//! SQLite allows one writer at a time; concurrent writers on several
//! connections turn load into `SQLITE_BUSY`. So all writes go through a pool
//! of exactly one connection (requests queue for it in-process), reads go
//! through a separate read-only pool, and the database runs in WAL mode so
//! that readers never wait for the writer.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Sqlite;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use super::OutboxRow;
use super::migrate::{self, Embedded};
use super::purge::DeferredDeletes;
use super::rows::outbox_row_from_row;
use super::sql::{Dialect, NamedPool, Sorted, SqlStore, cached, placeholders_from};

/// How long a statement waits for another process's write lock (for example
/// a backup tool) before giving up with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's page cache, per connection, in KiB (SQLite's default is about
/// 2 MiB each, which many readers would multiply). The operating system
/// caches the file as well, so a small cache costs little speed. Not less
/// than 512 KiB a reader: with 128 KiB, the 20 readers of a read-heavy load
/// took 10 MB less at the peak, but in a full benchmark run deep pages of
/// a list of a million events were served at 0.6–0.7x the rate.
const WRITER_CACHE_KIB: u32 = 2048;
const READER_CACHE_KIB: u32 = 512;

/// Read connections kept open: the configured pool size, but not more than
/// two per core. A read on SQLite is work on this process's cores, with no
/// network round trip to overlap, so readers beyond that only queue for the
/// cores while each keeps a thread and a page cache of its own. Measured on
/// 2 cores (lists at 10k and 1M rows, `scripts/bench.sh --only lists`): 4
/// readers instead of 20 took 11–14 MB less at the peak; lists at 1M rows
/// served 0.56–1.18x as many requests (mostly fewer), where the 20 threads
/// also took a larger share of the cores from the load generator beside
/// them.
fn reader_connections(configured: u32, cores: usize) -> u32 {
    let cap = u32::try_from(cores.saturating_mul(2)).unwrap_or(u32::MAX);
    configured.min(cap).max(1)
}

/// SQLite's side of the SQL store.
pub(crate) struct Lite;

/// The store on SQLite.
pub(crate) type SqliteStore = SqlStore<Lite>;

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory.
    pub(crate) async fn open(
        path: &Path,
        readers: u32,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create directory {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL is durable against process crashes; only an
            // OS crash or power loss can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    // The cascade from users to events would remove a
                    // deleted user's events in its transaction; they are
                    // removed in chunks afterwards (see `purge`).
                    .foreign_keys(false)
                    .pragma("cache_size", format!("-{WRITER_CACHE_KIB}")),
            )
            .await
            .with_context(|| format!("failed to open SQLite database {}", path.display()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let configured = readers;
        let readers = reader_connections(configured, cores);
        if readers < configured {
            tracing::info!(
                configured,
                readers,
                cores,
                "SQLite keeps at most two read connections per core (DB_MAX_CONNECTIONS)"
            );
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(readers)
            .acquire_timeout(acquire_timeout)
            .connect_with(
                options
                    .read_only(true)
                    .pragma("cache_size", format!("-{READER_CACHE_KIB}")),
            )
            .await
            .with_context(|| format!("failed to open SQLite database {}", path.display()))?;
        let deferred_deletes = DeferredDeletes::start(writer.clone());
        Ok(SqlStore::new(
            NamedPool::new("writer", writer),
            Some(NamedPool::new("reader", reader)),
        )
        .with_deferred_deletes(deferred_deletes))
    }
}

/// The one text format of timestamps in this database: fixed width, so that
/// comparing text compares time.
fn ts(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[async_trait]
impl Dialect for Lite {
    type Db = Sqlite;
    type Time = String;

    const NAME: &'static str = "sqlite";
    const MIGRATIONS: Embedded = migrate::SQLITE;
    const LATER_OF: &'static str = "MAX";
    const LOCK_ROW: &'static str = "";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
    /// The Go service ran on PostgreSQL only.
    const BEFORE_MIGRATIONS: &'static str = "";
    /// One write lock for the whole database: see [`super::purge`].
    const DEFERRED_EVENT_DELETES: bool = true;
    const PARAM: &'static str = "?";
    const UNNUMBERED_PARAMS: bool = true;

    fn time(at: &DateTime<Utc>) -> String {
        ts(at)
    }

    /// Constraint violations by kind; lock contention as `Unavailable`.
    fn sort(err: &dyn DatabaseError) -> Option<Sorted> {
        match err.kind() {
            ErrorKind::UniqueViolation if err.message().contains("users.email") => {
                return Some(Sorted::EmailTaken);
            }
            ErrorKind::ForeignKeyViolation => return Some(Sorted::UserNotFound),
            _ => {}
        }
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        let primary = err
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        matches!(primary, Some(5 | 6)).then_some(Sorted::Unavailable)
    }

    /// On the single writer, so no other relay can interleave; leases use
    /// this process's clock (there is one process per file).
    async fn claim_outbox(
        pool: &SqlitePool,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let now = Utc::now();
        sqlx::query(
            "UPDATE outbox SET locked_until = $1, locked_by = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox WHERE locked_until IS NULL OR locked_until < $3 \
              ORDER BY id LIMIT $4) \
             RETURNING id, key, payload, traceparent, tracestate",
        )
        .bind(ts(&(now + lease)))
        .bind(holder)
        .bind(ts(&now))
        .bind(i64::from(limit))
        .try_map(|row: SqliteRow| outbox_row_from_row(&row))
        .fetch_all(pool)
        .await
    }

    async fn renew_outbox(
        pool: &SqlitePool,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let sql = format!(
            "UPDATE outbox SET locked_until = $1 WHERE locked_by = $2 AND id IN {} RETURNING id",
            placeholders_from::<Lite>(3, ids.len())
        );
        let query = sqlx::query_scalar(&sql)
            .persistent(cached(ids.len()))
            .bind(ts(&(Utc::now() + lease)))
            .bind(holder);
        ids.iter()
            .fold(query, |query, id| query.bind(*id))
            .fetch_all(pool)
            .await
    }
}

#[cfg(test)]
impl SqliteStore {
    /// A migrated store on a new file in `dir` (tests).
    pub(crate) async fn migrated_in(dir: &Path, readers: u32) -> Self {
        let store = Self::open(&dir.join("t.db"), readers, Duration::from_secs(5))
            .await
            .expect("open the database");
        super::Store::migrate(&store)
            .await
            .expect("migrate the database");
        store
    }
}

#[cfg(test)]
mod tests {
    use super::{SqliteStore, reader_connections};
    use crate::store::Store;

    #[tokio::test]
    async fn an_opened_store_reads_on_at_most_two_connections_per_core() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::migrated_in(dir.path(), 10_000).await;
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        let max = |name: &str| {
            let stats = store.pool_stats();
            stats
                .iter()
                .find(|s| s.pool == name)
                .expect("the pool's figures")
                .max
        };
        assert_eq!(max("reader"), (2 * cores).min(10_000));
        assert_eq!(max("writer"), 1);
    }

    #[test]
    fn readers_are_the_pool_size_up_to_two_per_core() {
        assert_eq!(reader_connections(20, 2), 4);
        assert_eq!(reader_connections(3, 2), 3);
        assert_eq!(reader_connections(20, 16), 20);
        assert_eq!(reader_connections(1, 0), 1);
    }
}
