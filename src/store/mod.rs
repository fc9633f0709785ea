//! The Store port: where users, events, the outbox and derived activity live.
//!
//! Every write that emits a bus message commits the row change and its
//! outbox row in one transaction, so a message exists if and only if its
//! change does. The outbox relay later claims rows, publishes them and
//! deletes them; the event processor applies messages idempotently (dedupe
//! by message id in the same transaction as the effect).
//!
//! Implementations: [`sqlite::SqliteStore`] (embedded default) and
//! [`postgres::PostgresStore`] (configured).

mod migrate;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Activity, Event, EventFilter, EventMessage, Page, PageOf, User, UserPatch};

/// What can go wrong in a store, sorted by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The email belongs to another user (unique constraint `users_email_key`).
    #[error("email is already taken")]
    EmailTaken,
    /// The user an event refers to does not exist (foreign key).
    #[error("user does not exist")]
    UserNotFound,
    /// The database cannot be reached or is too busy right now; retrying
    /// later can succeed.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a broken database.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    /// Sorts a driver error into `Unavailable` or `Other`; callers map the
    /// constraint violations they expect before calling this.
    pub(crate) fn from_sqlx(err: sqlx::Error, context: &'static str) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err),
            other => Self::Other(anyhow::Error::new(other).context(context)),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An outbox row claimed by the relay: one message to publish.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Position in the outbox; rows are claimed in this order.
    pub id: i64,
    /// The bus key (user id).
    pub key: String,
    /// The message JSON, exactly as it will be published.
    pub payload: String,
}

/// How far the relay is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxBacklog {
    pub rows: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// A connection pool's figures, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `main` (PostgreSQL), `writer` or `reader` (SQLite).
    pub pool: &'static str,
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: usize,
    pub max: u32,
    /// Tasks waiting for a connection.
    pub waiting: usize,
}

/// Counts the tasks waiting for a connection of one pool (sqlx does not).
#[derive(Debug, Default)]
pub(crate) struct Waiting(AtomicUsize);

impl Waiting {
    /// Awaits `acquire`, counted as waiting meanwhile (also if cancelled).
    pub(crate) async fn on<T>(&self, acquire: impl Future<Output = T>) -> T {
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.0.fetch_add(1, Ordering::Relaxed);
        let _counted = Counted(&self.0);
        acquire.await
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The figures of a sqlx pool.
pub(crate) fn pool_stats<DB: sqlx::Database>(
    pool: &'static str,
    sqlx_pool: &sqlx::Pool<DB>,
    waiting: &Waiting,
) -> PoolStats {
    PoolStats {
        pool,
        size: sqlx_pool.size(),
        idle: sqlx_pool.num_idle(),
        max: sqlx_pool.options().get_max_connections(),
        waiting: waiting.get(),
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name for logs and health checks (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Figures of each connection pool.
    fn pool_stats(&self) -> Vec<PoolStats>;

    /// Applies pending schema migrations. Safe when several replicas start
    /// at once: each migration is applied once.
    async fn migrate(&self) -> StoreResult<()>;

    /// Round trip to the database.
    async fn ping(&self) -> StoreResult<()>;

    /// Inserts `user` and the outbox row for `message` in one transaction.
    async fn create_user(&self, user: &User, message: &EventMessage) -> StoreResult<()>;

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>>;

    /// Applies a non-empty patch, sets `updated_at = now` and writes a
    /// `user_updated` outbox row, in one transaction. `None`: no such user.
    async fn update_user(
        &self,
        id: Uuid,
        patch: &UserPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;

    /// Deletes the user and their events and writes `message`
    /// (`user_deleted`) to the outbox, in one transaction. Returns the ids of
    /// the deleted events (their cache entries must go too); `None`: no such
    /// user.
    async fn delete_user(&self, id: Uuid, message: &EventMessage)
    -> StoreResult<Option<Vec<Uuid>>>;

    /// Newest first.
    async fn list_users(&self, page: Page) -> StoreResult<PageOf<User>>;

    /// Inserts `event` and its outbox row in one transaction;
    /// [`StoreError::UserNotFound`] when its user does not exist.
    async fn create_event(&self, event: &Event, message: &EventMessage) -> StoreResult<()>;

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>>;

    /// Newest first, narrowed by `filter`.
    async fn list_events(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>>;

    /// Leases up to `limit` unpublished rows, oldest first, for `lease`:
    /// until it expires no other relay (in this process or another replica)
    /// claims them.
    async fn claim_outbox(&self, limit: u32, lease: Duration) -> StoreResult<Vec<OutboxRow>>;

    /// Removes rows whose messages the bus has acknowledged.
    async fn complete_outbox(&self, ids: &[i64]) -> StoreResult<()>;

    /// Ends the lease of rows that could not be published, so that the next
    /// attempt does not wait for it to expire.
    async fn release_outbox(&self, ids: &[i64]) -> StoreResult<()>;

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog>;

    /// Applies a bus message to the user's activity unless a message with the
    /// same id was applied before; the dedupe record and the effect commit
    /// together. Returns whether it was applied now.
    async fn apply_message(&self, message: &EventMessage) -> StoreResult<bool>;

    /// The user's activity (zero counts before the first message).
    async fn get_activity(&self, user_id: Uuid) -> StoreResult<Activity>;

    /// Waits for in-flight queries and closes connections.
    async fn close(&self);
}

/// Assembles an [`Activity`] from its summary row and per-type counts.
pub(crate) fn activity_from(
    user_id: Uuid,
    summary: Option<(i64, DateTime<Utc>)>,
    by_type: Vec<(String, i64)>,
) -> Activity {
    let count = |n: i64| u64::try_from(n).unwrap_or_default();
    Activity {
        user_id,
        total_events: summary.map_or(0, |(n, _)| count(n)),
        events_by_type: by_type.into_iter().map(|(t, n)| (t, count(n))).collect(),
        last_event_at: summary.map(|(_, at)| at),
    }
}
