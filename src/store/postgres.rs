//! PostgreSQL: the configured backend for production.
//!
//! One pool for everything. The pool connects lazily, so the service starts
//! (and reports itself unready) while PostgreSQL is still coming up; the
//! startup task runs migrations with backoff until it is reachable.
//! Migrations take an advisory lock, so replicas starting together apply
//! each one once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::OutboxRow;
use super::migrate::{self, Embedded};
use super::replica::{Freshness, SAMPLE_EVERY};
use super::rows::outbox_row_from_row;
use super::sql::{
    Dialect, EventPartitions, NamedPool, PARTITION_EVENTS, PARTITIONED, PARTITIONS_LOCK, Replica,
    Sorted, SqlStore, cached, placeholders_from,
};
use tokio_util::sync::CancellationToken;

/// PostgreSQL's side of the SQL store.
pub(crate) struct Pg;

/// The store on PostgreSQL.
pub(crate) type PostgresStore = SqlStore<Pg>;

impl PostgresStore {
    /// Creates the pool without connecting. New partitions of `events` are
    /// as long as `EVENTS_RETENTION` (`events_retention`) asks.
    pub(crate) fn connect_lazy(
        options: PgConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
        events_retention: Option<Duration>,
    ) -> Self {
        let pool = pool(options, max_connections, acquire_timeout);
        SqlStore::new(NamedPool::new("main", pool), None).with_event_partitions(EventPartitions {
            retention: events_retention,
        })
    }

    /// Sends the reads a replica may take to the replica at `options`
    /// (a pool of `max_connections`), while it is at most `max_lag` behind
    /// and has the caller's writes (see [`super::replica`]); starts the
    /// task that samples how far behind it is.
    pub(crate) fn with_read_replica(
        self,
        options: PgConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
        max_lag: Duration,
    ) -> Self {
        // Connections of its own: a busy pool must not hold up the samples.
        let primary = pool(
            self.primary().connect_options().as_ref().clone(),
            1,
            acquire_timeout,
        );
        let freshness = Freshness::new(max_lag);
        let sampler = CancellationToken::new();
        tokio::spawn(sample_until_stopped(
            primary,
            pool(options.clone(), 1, acquire_timeout),
            Arc::clone(&freshness),
            sampler.clone(),
        ));
        self.with_replica(Replica {
            pool: NamedPool::new("replica", pool(options, max_connections, acquire_timeout)),
            freshness,
            sampler,
        })
    }
}

/// A pool of `max_connections` to the server at `options`, connected
/// lazily.
fn pool(options: PgConnectOptions, max_connections: u32, acquire_timeout: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // A ping per checkout would cost a round trip per request; a
        // broken connection fails its query instead, is dropped, and the
        // request gets a 503.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(600))
        .connect_lazy_with(options.application_name("highload"))
}

/// Compares the replica's replayed WAL position with the primary's every
/// [`SAMPLE_EVERY`], until `stop`.
async fn sample_until_stopped(
    primary: PgPool,
    replica: PgPool,
    freshness: Arc<Freshness>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        match caught_up(&primary, &replica).await {
            Ok(caught_up) => {
                if caught_up {
                    freshness.caught_up_at(started);
                }
                if std::mem::take(&mut failing) {
                    tracing::info!("the read replica answers again");
                }
            }
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(
                    error = format!("{:#}", anyhow::Error::new(err)),
                    "cannot tell how far behind the read replica is; reads go to the primary \
                     once it is DB_READ_MAX_LAG behind"
                );
            }
            Err(_) => {}
        }
    }
    primary.close().await;
    replica.close().await;
}

/// Whether the replica has replayed as far as the primary had written
/// when this was called (a server that is not in recovery has everything).
async fn caught_up(primary: &PgPool, replica: &PgPool) -> Result<bool, sqlx::Error> {
    let written: i64 =
        sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(primary)
            .await?;
    let replayed: Option<i64> = sqlx::query_scalar(
        "SELECT CASE WHEN pg_is_in_recovery() \
         THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint END",
    )
    .fetch_one(replica)
    .await?;
    Ok(replayed.is_none_or(|replayed| replayed >= written))
}

#[async_trait]
impl Dialect for Pg {
    type Db = Postgres;
    type Time = DateTime<Utc>;

    const NAME: &'static str = "postgres";
    const MIGRATIONS: Embedded = migrate::POSTGRES;
    const LATER_OF: &'static str = "GREATEST";
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    /// The Go service's latest version has an `api_keys` table of its own
    /// (`permissions`, `is_active`, no `shown`): it is kept, renamed
    /// `go_api_keys`, so that migration 0005 can create ours. Its keys are
    /// not taken over (they are recreated with `POST /api/v1/api-keys`).
    ///
    /// A database that ran the partitioning of `events` as migration 11
    /// (a development version did) forgets that record: the partitioning
    /// now runs at start-up when `EVENTS_RETENTION` is set, and the table
    /// stays partitioned.
    const BEFORE_MIGRATIONS: &'static str = "DO $$ DECLARE item record; BEGIN \
        IF to_regclass('api_keys') IS NOT NULL \
           AND to_regclass('go_api_keys') IS NULL \
           AND EXISTS (SELECT 1 FROM information_schema.columns \
                       WHERE table_schema = current_schema() AND table_name = 'api_keys' \
                       AND column_name = 'permissions') \
           AND NOT EXISTS (SELECT 1 FROM information_schema.columns \
                           WHERE table_schema = current_schema() AND table_name = 'api_keys' \
                           AND column_name = 'shown') \
        THEN \
          ALTER TABLE api_keys RENAME TO go_api_keys; \
          FOR item IN SELECT conname FROM pg_constraint \
                      WHERE conrelid = 'go_api_keys'::regclass AND conname LIKE 'api_keys%' LOOP \
            EXECUTE format('ALTER TABLE go_api_keys RENAME CONSTRAINT %I TO %I', \
                           item.conname, 'go_' || item.conname); \
          END LOOP; \
          FOR item IN SELECT indexname FROM pg_indexes \
                      WHERE schemaname = current_schema() AND tablename = 'go_api_keys' \
                      AND indexname LIKE 'api_keys%' LOOP \
            EXECUTE format('ALTER INDEX %I RENAME TO %I', item.indexname, 'go_' || item.indexname); \
          END LOOP; \
        END IF; \
        IF to_regclass('_sqlx_migrations') IS NOT NULL THEN \
          DELETE FROM _sqlx_migrations WHERE version = 11 \
            AND description = 'events partitioned by time'; \
        END IF; END $$";
    /// Row locks: deleting many events holds up no other writer.
    const DEFERRED_EVENT_DELETES: bool = false;
    const PARAM: &'static str = "$";
    /// PostgreSQL numbers every parameter; it finds them by number.
    const UNNUMBERED_PARAMS: bool = false;

    fn time(at: &DateTime<Utc>) -> DateTime<Utc> {
        *at
    }

    /// Constraint violations by constraint name; transient conditions by
    /// SQLSTATE class.
    fn sort(err: &dyn DatabaseError) -> Option<Sorted> {
        match err.constraint() {
            Some("users_email_key") => return Some(Sorted::EmailTaken),
            Some("events_user_id_fkey") => return Some(Sorted::UserNotFound),
            _ => {}
        }
        let code = err.code().unwrap_or_default();
        // 08: connection exception, 53: insufficient resources,
        // 57P0x: shutting down / starting up, 40001/40P01: retry the
        // transaction.
        let transient = code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || code == "40001"
            || code == "40P01";
        transient.then_some(Sorted::Unavailable)
    }

    /// 40P01 (deadlock detected), 40001 (serialization failure).
    fn is_conflict(err: &sqlx::Error) -> bool {
        err.as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "40P01" || code == "40001")
    }

    /// `SKIP LOCKED`, so that relays of several replicas claim different
    /// rows; the database's clock decides leases, so replicas with skewed
    /// clocks agree on them.
    async fn claim_outbox(
        pool: &PgPool,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        sqlx::query(
            "UPDATE outbox SET locked_until = now() + make_interval(secs => $1), \
             locked_by = $2, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM outbox WHERE locked_until IS NULL OR locked_until < now() \
              ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, key, payload, traceparent, tracestate",
        )
        .bind(lease.as_secs_f64())
        .bind(holder)
        .bind(i64::from(limit))
        .try_map(|row: PgRow| outbox_row_from_row(&row))
        .fetch_all(pool)
        .await
    }

    /// In one transaction, under the partitions' lock, so that replicas
    /// starting together partition it once; `events` is locked (reads and
    /// writes wait) meanwhile: about a second per million events.
    async fn partition_events(pool: &PgPool) -> Result<bool, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITIONS_LOCK)
            .execute(&mut *tx)
            .await?;
        if sqlx::query_scalar::<_, bool>(PARTITIONED)
            .fetch_one(&mut *tx)
            .await?
        {
            return Ok(false);
        }
        tracing::info!(
            "partitioning events by time (EVENTS_RETENTION is set); events is locked meanwhile"
        );
        // A query without arguments goes as a simple query: several
        // statements in one.
        sqlx::Executor::execute(&mut *tx, PARTITION_EVENTS).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Rows another relay claimed meanwhile carry its id, not `holder`.
    async fn renew_outbox(
        pool: &PgPool,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let sql = format!(
            "UPDATE outbox SET locked_until = now() + make_interval(secs => $1) \
             WHERE locked_by = $2 AND id IN {} RETURNING id",
            placeholders_from::<Pg>(3, ids.len())
        );
        let query = sqlx::query_scalar(&sql)
            .persistent(cached(ids.len()))
            .bind(lease.as_secs_f64())
            .bind(holder);
        ids.iter()
            .fold(query, |query, id| query.bind(*id))
            .fetch_all(pool)
            .await
    }
}
