//! The SQL store, one for both backends: statements, transactions and row
//! mapping are written once here; a [`Dialect`] supplies only what truly
//! differs between SQLite and PostgreSQL (how a timestamp is bound, the one
//! statement whose functions differ, row locking, claiming outbox rows,
//! sorting errors, the migrations).
//!
//! By concern:
//! - [`dialect`]: what each backend must answer;
//! - [`statements`]: the text of generated statements (placeholders,
//!   multi-row lists, which statements stay prepared);
//! - [`write`]: the write path, with the rules of a batch;
//! - [`read`]: single rows, pages of the lists, activity;
//! - [`outbox`]: the relay's claims, renewals, deletes and releases;
//! - [`api_keys`]: the table of API keys;
//! - this module: the store itself, its pools, transactions, and the
//!   [`Store`] implementation, which hands each call to its concern.

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrate;
use sqlx::pool::PoolConnection;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::migrate;
use super::partitions;
use super::purge::DeferredDeletes;
use super::replica::Freshness;
use super::{
    OutboxBacklog, OutboxRow, Outcome, PoolStats, Store, StoreError, StoreResult, StoredResponse,
    Waiting, Write, Written,
};
use crate::domain::{Activity, Event, EventFilter, Page, PageOf, User};

/// Writes `impl … where <the bounds every statement below needs from the
/// driver> { … }`. Rust does not carry bounds like these along with the
/// `Dialect` trait, so each `impl` block states them, through this macro.
macro_rules! with_driver_bounds {
    ([$($header:tt)*] { $($body:tt)* }) => {
        $($header)*
        where
            for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
            for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
            for<'q> Uuid: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
            for<'q> String: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
            for<'q> Option<String>: Encode<'q, D::Db>,
            for<'q> Option<D::Time>: Encode<'q, D::Db>,
            for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
            for<'q> DateTime<Utc>: Decode<'q, D::Db> + Type<D::Db>,
            for<'q> bool: Decode<'q, D::Db> + Type<D::Db>,
            for<'r> &'r str: ColumnIndex<<D::Db as Database>::Row>,
            usize: ColumnIndex<<D::Db as Database>::Row>,
            <D::Db as Database>::Connection: Migrate,
            D::Db: HasStatementCache,
        {
            $($body)*
        }
    };
}

/// `$read` (an expression of `$pool`, a [`NamedPool`]) on the replica
/// when it may take the read, else (and when the replica fails, or
/// `$missing` says it has not the row yet) on the primary's readers.
macro_rules! replicated {
    ($store:expr, $missing:expr, |$pool:ident| $read:expr) => {{
        let mut pools = $store.read_pools().peekable();
        loop {
            let $pool = pools.next().expect("BUG: the primary is the last pool");
            let result = $read.await;
            let last = pools.peek().is_none();
            match &result {
                Ok(found) if !last && ($missing)(found) => {}
                Err(err) if !last => tracing::debug!(
                    error = %err,
                    "read from the replica failed; reading from the primary"
                ),
                _ => break result,
            }
        }
    }};
}

mod accounts;
mod api_keys;
mod dialect;
mod outbox;
mod read;
mod retention;
pub(crate) use retention::{PARTITION_EVENTS, PARTITIONED, PARTITIONS_LOCK};
mod statements;
#[cfg(test)]
mod tests;
mod write;

pub(crate) use accounts::{AccountBy, AccountRow, AccountTable, NewRefreshToken, Revoke};
pub(crate) use api_keys::{ApiKeyRow, ApiKeyTable, NewApiKeyRow};
pub(crate) use dialect::{Dialect, Sorted};
pub(crate) use statements::{cached, placeholders_from};

/// A pool with its name and waiters, for the metrics.
pub(crate) struct NamedPool<DB: Database> {
    /// `main` (PostgreSQL), `writer` or `reader` (SQLite).
    pub(crate) name: &'static str,
    pub(crate) pool: Pool<DB>,
    pub(crate) waiting: Waiting,
}

impl<DB: Database> NamedPool<DB> {
    pub(crate) fn new(name: &'static str, pool: Pool<DB>) -> Self {
        Self {
            name,
            pool,
            waiting: Waiting::default(),
        }
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            pool: self.name,
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
            waiting: self.waiting.get(),
        }
    }
}

/// The Store over any [`Dialect`].
pub(crate) struct SqlStore<D: Dialect> {
    /// Takes every write.
    writer: NamedPool<D::Db>,
    /// Takes the reads when set (SQLite's read-only pool, so that readers
    /// never queue behind its single writer); else the writer does.
    reader: Option<NamedPool<D::Db>>,
    /// Removes deleted users' events after the users, when the dialect
    /// defers them.
    deferred_deletes: Option<DeferredDeletes>,
    /// PostgreSQL: how `events` is kept (see [`EventPartitions`]).
    partitions: Option<EventPartitions>,
    /// A streaming replica that takes the reads it is fresh enough for
    /// (see [`crate::store::replica`]).
    replica: Option<Replica<D::Db>>,
}

/// Where `events` may be partitioned (PostgreSQL).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventPartitions {
    /// `EVENTS_RETENTION`: set, `events` is partitioned at start-up, in
    /// partitions [`partitions::width_for`] it long.
    pub(crate) retention: Option<Duration>,
}

/// A replica's pool, how fresh it is, and the task that samples that.
pub(crate) struct Replica<DB: Database> {
    pub(crate) pool: NamedPool<DB>,
    pub(crate) freshness: Arc<Freshness>,
    pub(crate) sampler: CancellationToken,
}

impl<D: Dialect> SqlStore<D> {
    pub(crate) fn new(writer: NamedPool<D::Db>, reader: Option<NamedPool<D::Db>>) -> Self {
        Self {
            writer,
            reader,
            deferred_deletes: None,
            partitions: None,
            replica: None,
        }
    }

    /// The primary's pool.
    pub(crate) fn primary(&self) -> &Pool<D::Db> {
        &self.writer.pool
    }

    /// Sends the reads a replica may take to `replica`.
    pub(crate) fn with_replica(mut self, replica: Replica<D::Db>) -> Self {
        self.replica = Some(replica);
        self
    }

    /// The replica, if there is one and it is fresh enough for the
    /// current caller.
    fn replica_for_caller(&self) -> Option<&NamedPool<D::Db>> {
        self.replica
            .as_ref()
            .filter(|replica| replica.freshness.serves_caller())
            .map(|replica| &replica.pool)
    }

    /// The pools a read tries in turn: the replica when it may take the
    /// read, then the primary's readers.
    fn read_pools(&self) -> impl Iterator<Item = &NamedPool<D::Db>> {
        self.replica_for_caller()
            .into_iter()
            .chain(std::iter::once(self.reader()))
    }

    /// Partitions `events` by time once a retention is set (PostgreSQL).
    pub(crate) fn with_event_partitions(mut self, partitions: EventPartitions) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// The task that removes deleted users' events, for a dialect that
    /// defers them.
    pub(crate) fn with_deferred_deletes(mut self, task: DeferredDeletes) -> Self {
        self.deferred_deletes = Some(task);
        self
    }

    fn reader(&self) -> &NamedPool<D::Db> {
        self.reader.as_ref().unwrap_or(&self.writer)
    }
}

with_driver_bounds! {
[impl<D: Dialect> SqlStore<D>] {
    /// Takes a connection and begins a transaction on it, in a task of its
    /// own. sqlx (0.8 and 0.9) counts a PostgreSQL transaction as begun only
    /// once BEGIN's answer is read: a `begin` dropped while it waits (a
    /// client that hangs up mid-request, a timeout) hands the connection
    /// back to the pool inside a transaction that nothing ends. Whoever
    /// borrows it next then runs in that transaction, holds its locks
    /// indefinitely and loses its effects when the connection closes; the
    /// server logs "there is already a transaction in progress". As a task,
    /// the begin completes whether or not its caller still waits, and a
    /// transaction nobody takes is dropped, which rolls it back.
    /// `statement` replaces the driver's plain `BEGIN` when given.
    async fn begin(
        pool: &NamedPool<D::Db>,
        statement: Option<&'static str>,
    ) -> StoreResult<Transaction<'static, D::Db>> {
        let connections = pool.pool.clone();
        let begun = pool
            .waiting
            .on(tokio::spawn(async move {
                match statement {
                    Some(statement) => connections.begin_with(statement).await,
                    None => connections.begin().await,
                }
            }))
            .await
            .map_err(|e| StoreError::Other(anyhow::Error::new(e).context("beginning a transaction failed")))?;
        begun.map_err(|e| D::classify(e, "failed to begin a transaction"))
    }

    async fn acquire(pool: &NamedPool<D::Db>) -> StoreResult<PoolConnection<D::Db>> {
        pool.waiting
            .on(pool.pool.acquire())
            .await
            .map_err(|e| D::classify(e, "failed to get a connection"))
    }
}
}

with_driver_bounds! {
[#[async_trait]
impl<D: Dialect> Store for SqlStore<D>] {
    fn backend(&self) -> &'static str {
        D::NAME
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        std::iter::once(&self.writer)
            .chain(self.reader.as_ref())
            .chain(self.replica.as_ref().map(|replica| &replica.pool))
            .map(NamedPool::stats)
            .collect()
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrator = migrate::migrator(D::MIGRATIONS)
            .await
            .with_context(|| format!("failed to load the {} migrations", D::NAME))?;
        if !D::BEFORE_MIGRATIONS.is_empty() {
            sqlx::query(D::BEFORE_MIGRATIONS)
                .persistent(false)
                .execute(&mut *Self::acquire(&self.writer).await?)
                .await
                .map_err(|e| D::classify(e, "failed to prepare the migrations"))?;
        }
        migrator.run(&self.writer.pool).await.map_err(|err| match err {
            sqlx::migrate::MigrateError::Execute(e) => D::classify(e, "failed to migrate"),
            other => StoreError::Other(
                anyhow::Error::new(other)
                    .context(format!("failed to run the {} migrations", D::NAME)),
            ),
        })?;
        // Events a stopped process left to remove, now that their table
        // surely exists.
        if let Some(task) = &self.deferred_deletes {
            task.wake();
        }
        // Partitioned once a retention is set, with partitions for the
        // writes to come before any is taken.
        if let Some(EventPartitions { retention: Some(_), .. }) = self.partitions {
            let started = std::time::Instant::now();
            if D::partition_events(&self.writer.pool)
                .await
                .map_err(|e| D::classify(e, "failed to partition events"))?
            {
                tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "events is now partitioned by time (EVENTS_RETENTION is set)"
                );
            }
        }
        self.prepare_events(Utc::now()).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = Self::acquire(self.reader()).await?;
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map_err(|e| D::classify(e, "failed to ping"))?;
        Ok(())
    }

    async fn write(&self, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
        let outcomes = self.write_batch(writes).await?;
        if let Some(task) = &self.deferred_deletes {
            let left_events = outcomes.iter().any(|outcome| {
                matches!(outcome, Ok(Written::Deleted { event_ids }) if !event_ids.is_empty())
            });
            if left_events {
                task.wake();
            }
        }
        Ok(outcomes)
    }


    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>> {
        self.find_user(id).await
    }

    async fn list_users(&self, page: Page) -> StoreResult<PageOf<User>> {
        self.user_page(page).await
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        self.find_event(id).await
    }

    async fn list_events(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>> {
        self.event_page(filter, page).await
    }

    async fn claim_outbox(
        &self,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxRow>> {
        self.claim_outbox_rows(holder, limit, lease).await
    }

    async fn complete_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        self.delete_outbox_rows(ids).await
    }

    async fn renew_outbox(
        &self,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>> {
        self.renew_outbox_lease(holder, ids, lease).await
    }

    async fn release_outbox(&self, holder: Uuid, ids: &[i64]) -> StoreResult<()> {
        self.release_outbox_rows(holder, ids).await
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        self.measure_outbox().await
    }

    async fn get_activity(&self, user_id: Uuid) -> StoreResult<Activity> {
        self.find_activity(user_id).await
    }

    async fn idempotent_response(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<StoredResponse>> {
        self.find_stored_response(scope, key).await
    }

    async fn purge_idempotency_keys(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<usize> {
        self.purge_expired_keys(now, limit).await
    }

    async fn prune_processed_messages(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<usize> {
        self.forget_processed(before, limit).await
    }

    async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        self.store_or_read_secret(name, fresh).await
    }

    fn replica_lag(&self) -> Option<Option<Duration>> {
        self.replica.as_ref().map(|replica| replica.freshness.lag())
    }

    async fn prepare_events(&self, now: DateTime<Utc>) -> StoreResult<usize> {
        match self.partitions {
            Some(EventPartitions { retention }) => {
                self.create_partitions(now, partitions::width_for(retention)).await
            }
            None => Ok(0),
        }
    }

    async fn drop_expired_partitions(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        match self.partitions {
            Some(_) => self.drop_partitions_before(before).await,
            None => Ok(0),
        }
    }

    async fn expire_events(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<usize> {
        self.delete_expired_events(before, limit).await
    }

    async fn close(&self) {
        if let Some(task) = &self.deferred_deletes {
            task.stop().await;
        }
        self.writer.pool.close().await;
        if let Some(reader) = &self.reader {
            reader.pool.close().await;
        }
        if let Some(replica) = &self.replica {
            replica.sampler.cancel();
            replica.pool.pool.close().await;
        }
    }
}
}
