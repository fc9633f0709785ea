//! The Store port: where users, events, the outbox and derived activity live.
//!
//! Every write that emits a bus message commits the row change and its
//! outbox row in one transaction, so a message exists if and only if its
//! change does. The outbox relay later claims rows, publishes them and
//! deletes them; the event processor applies messages idempotently (dedupe
//! by message id in the same transaction as the effect).
//!
//! Writes are commands ([`Write`]): one call applies a batch of them in one
//! transaction and answers each with its own outcome, so that concurrent
//! requests can share a commit. The SQL and the row mapping are shared by
//! both backends ([`sql::SqlStore`]); each backend adds only its
//! [`sql::Dialect`].
//!
//! Implementations: [`sqlite`] (embedded default) and [`postgres`]
//! (configured), behind [`GroupCommit`], which gathers concurrent writes
//! into shared transactions.

mod configured;
mod counts;
mod group;
mod idempotency;
mod migrate;
pub(crate) mod partitions;
pub(crate) mod postgres;
mod purge;
pub(crate) mod replica;
pub(crate) mod retention;
mod rows;
mod sql;
pub(crate) mod sqlite;

pub(crate) use configured::{Opened, open};
pub(crate) use group::{CommitObserver, GroupCommit, GroupCommitSettings};
pub(crate) use idempotency::{IdempotencyKey, StoredResponse};
pub(crate) use sql::{
    AccountBy, AccountRow, AccountTable, ApiKeyRow, ApiKeyTable, NewApiKeyRow, NewRefreshToken,
    Revoke,
};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Activity, Event, EventFilter, EventMessage, Page, PageOf, User, UserPatch};
use crate::telemetry::trace_context::TraceContext;

/// A new user with `email` (Ada Lovelace, created now) and the message that
/// announces it: the fixture of the tests that write users.
#[cfg(test)]
pub(crate) fn new_user(email: &str) -> (User, EventMessage) {
    let now = crate::domain::now();
    let user = User {
        id: Uuid::now_v7(),
        email: email.to_owned(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        created_at: now,
        updated_at: now,
    };
    let message = EventMessage::for_user(EventMessage::USER_CREATED, &user, now);
    (user, message)
}

/// What can go wrong in a store, sorted by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The email belongs to another user (unique constraint `users_email_key`).
    #[error("email is already taken")]
    EmailTaken,
    /// The user a write names does not exist (the user to update or
    /// delete, or the user of a new event).
    #[error("user does not exist")]
    UserNotFound,
    /// The write's idempotency key was recorded by another write first
    /// (see [`Write::Idempotent`]).
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    /// The database cannot be reached or is too busy right now; retrying
    /// later can succeed.
    #[error("database unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
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
            | sqlx::Error::WorkerCrashed => Self::Unavailable(Arc::new(err)),
            other => Self::Other(anyhow::Error::new(other).context(context)),
        }
    }
}

impl StoreError {
    /// The same error for each write of a batch that failed as a whole.
    pub(crate) fn for_each_write(&self) -> Self {
        match self {
            Self::EmailTaken => Self::EmailTaken,
            Self::UserNotFound => Self::UserNotFound,
            Self::IdempotencyKeyTaken => Self::IdempotencyKeyTaken,
            Self::Unavailable(err) => Self::Unavailable(Arc::clone(err)),
            Self::Other(err) => Self::Other(anyhow::anyhow!("{err:#}")),
        }
    }
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

/// An outbox row claimed by the relay: one message to publish.
#[derive(Debug, Clone)]
pub(crate) struct OutboxRow {
    /// Position in the outbox; rows are claimed in this order.
    pub id: i64,
    /// The bus key (user id).
    pub key: String,
    /// The message JSON, exactly as it will be published.
    pub payload: String,
    /// The trace the change belongs to, passed on with the message.
    pub trace: Option<TraceContext>,
}

/// How far the relay is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct OutboxBacklog {
    pub rows: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// A connection pool's figures, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolStats {
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

/// One change a client asked for. Every write except
/// [`Write::ApplyMessage`] commits its outbox message with it.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// Inserts the user; [`StoreError::EmailTaken`] if the address is taken.
    CreateUser { user: User, message: EventMessage },
    /// Applies a non-empty patch and sets `updated_at = at`; the
    /// `user_updated` message is made from the updated row.
    UpdateUser {
        id: Uuid,
        patch: UserPatch,
        at: DateTime<Utc>,
        /// The trace of the `user_updated` message.
        trace: Option<TraceContext>,
    },
    /// Deletes the user and their events.
    DeleteUser { id: Uuid, message: EventMessage },
    /// Inserts the event; [`StoreError::UserNotFound`] without its user.
    CreateEvent { event: Event, message: EventMessage },
    /// Applies a bus message to the user's activity unless a message with
    /// the same id was applied before (the dedupe record and the effect
    /// commit together).
    ApplyMessage(EventMessage),
    /// Applies `write` and records `key` with the response to replay, in
    /// one transaction; [`StoreError::IdempotencyKeyTaken`] (and no effect)
    /// if the key is recorded and not expired. A rejected `write` records
    /// nothing.
    Idempotent {
        key: IdempotencyKey,
        status: u16,
        response: String,
        write: Box<Write>,
    },
}

/// What one [`Write`] did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Written {
    /// The user or event was inserted.
    Created,
    /// The user as it is now.
    Updated(User),
    /// The ids of the deleted user's events (their cache entries must go too).
    Deleted { event_ids: Vec<Uuid> },
    /// Whether the message was applied now (`false`: it was applied before).
    Applied(bool),
}

/// The outcome of one write of a batch: its own rejection
/// ([`StoreError::EmailTaken`], [`StoreError::UserNotFound`], …) leaves the
/// other writes of the batch alone.
pub(crate) type Outcome = StoreResult<Written>;

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

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Short name for logs and health checks (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Figures of each connection pool.
    fn pool_stats(&self) -> Vec<PoolStats>;

    /// Applies pending schema migrations. Safe when several replicas start
    /// at once: each migration is applied once.
    async fn migrate(&self) -> StoreResult<()>;

    /// Round trip to the database.
    async fn ping(&self) -> StoreResult<()>;

    /// Applies the writes in one transaction, in order, each with its
    /// outbox row, and answers each with its own [`Outcome`]. `Err` only
    /// when the batch as a whole failed (the database is unavailable, the
    /// commit failed): then none of it is committed.
    async fn write(&self, writes: &[Write]) -> StoreResult<Vec<Outcome>>;

    /// Applies one write in a transaction of its own (or, behind group
    /// commit, in whichever batch takes it).
    async fn write_one(&self, write: Write) -> Outcome {
        self.write(std::slice::from_ref(&write))
            .await?
            .pop()
            .expect("BUG: a store answers each write")
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>>;

    /// Newest first.
    async fn list_users(&self, page: Page) -> StoreResult<PageOf<User>>;

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>>;

    /// Newest first, narrowed by `filter`.
    async fn list_events(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>>;

    /// Leases up to `limit` unpublished rows, oldest first, to `holder`
    /// (a fresh id per claim) for `lease`: until it expires no other relay
    /// (in this process or another replica) claims them.
    async fn claim_outbox(
        &self,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxRow>>;

    /// Extends `holder`'s lease on rows `ids` to `lease` from now, and
    /// returns the ids it still held: a row missing from the answer was
    /// claimed by another relay after its lease expired, or is gone.
    async fn renew_outbox(
        &self,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>>;

    /// Removes rows whose messages the bus has acknowledged.
    async fn complete_outbox(&self, ids: &[i64]) -> StoreResult<()>;

    /// Ends `holder`'s lease of rows that could not be published, so that
    /// the next attempt does not wait for it to expire. Rows another relay
    /// holds by now stay its own.
    async fn release_outbox(&self, holder: Uuid, ids: &[i64]) -> StoreResult<()>;

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog>;

    /// The user's activity (zero counts before the first message).
    async fn get_activity(&self, user_id: Uuid) -> StoreResult<Activity>;

    /// The response recorded for an unexpired idempotency key.
    async fn idempotent_response(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<StoredResponse>>;

    /// Deletes up to `limit` keys that expired before `now`; how many.
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<usize>;

    /// Forgets up to `limit` of the processed messages' ids recorded before
    /// `before`, oldest first; how many. A message among them delivered
    /// again would be applied again: see `pipeline::prune`.
    async fn prune_processed_messages(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<usize>;

    /// The secret named `name` (as text, such as hex), shared by every
    /// replica of this database: `fresh` is stored as it if none is yet
    /// (the first caller's wins).
    async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String>;

    /// How far behind the read replica is: `None` without one,
    /// `Some(None)` while it has not been seen caught up.
    fn replica_lag(&self) -> Option<Option<Duration>> {
        None
    }

    /// Makes room for the events created until `now` plus a margin
    /// (PostgreSQL: the partitions of `events`, see [`partitions`]); how
    /// many partitions it created.
    async fn prepare_events(&self, now: DateTime<Utc>) -> StoreResult<usize>;

    /// Drops the partitions of `events` whose events were all created
    /// before `before` (PostgreSQL), with what they counted in the lists'
    /// totals; how many events they held.
    async fn drop_expired_partitions(&self, before: DateTime<Utc>) -> StoreResult<usize>;

    /// Deletes up to `limit` events created before `before`, with what they
    /// counted in the lists' totals; how many. The activity they added up
    /// to stays.
    async fn expire_events(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<usize>;

    /// Waits for in-flight queries and closes connections.
    async fn close(&self);
}

impl dyn Store {
    /// Applies one bus message ([`Write::ApplyMessage`]); whether it was
    /// applied now (`false`: it was applied before).
    pub(crate) async fn apply_message(&self, message: &EventMessage) -> StoreResult<bool> {
        applied(self.write_one(Write::ApplyMessage(message.clone())).await)
    }

    /// [`Self::apply_message`] for each of `messages`, in one call, so that
    /// they share transactions; each message's own outcome (a batch that
    /// failed as a whole fails each of them).
    pub(crate) async fn apply_messages(&self, messages: &[EventMessage]) -> Vec<StoreResult<bool>> {
        let writes: Vec<Write> = messages.iter().cloned().map(Write::ApplyMessage).collect();
        match self.write(&writes).await {
            Ok(outcomes) => outcomes.into_iter().map(applied).collect(),
            Err(err) => writes.iter().map(|_| Err(err.for_each_write())).collect(),
        }
    }
}

/// What a message application answered: whether it was applied now.
fn applied(outcome: Outcome) -> StoreResult<bool> {
    match outcome? {
        Written::Applied(fresh) => Ok(fresh),
        other => unreachable!("BUG: a message application answered {other:?}"),
    }
}

/// Assembles an [`Activity`] from its summary row and per-type counts.
/// Calls `delete` (which deletes up to `batch` rows, in a transaction of
/// its own, and says how many) until a round deletes fewer: how many in
/// all, and the error that ended the rounds early, if one did.
pub(crate) async fn delete_in_batches<F, Fut>(
    batch: u32,
    mut delete: F,
) -> (usize, Option<StoreError>)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = StoreResult<usize>>,
{
    let mut deleted = 0;
    loop {
        match delete(batch).await {
            Ok(n) => {
                deleted += n;
                if n < batch as usize {
                    return (deleted, None);
                }
            }
            Err(err) => return (deleted, Some(err)),
        }
    }
}

/// Removes every event created before `before`: the partitions wholly
/// older at once, then the rest `batch` at a time (see
/// [`delete_in_batches`]); how many, and the error that stopped it early.
pub(crate) async fn expire_events(
    store: &dyn Store,
    before: DateTime<Utc>,
    batch: u32,
) -> (usize, Option<StoreError>) {
    let dropped = match store.drop_expired_partitions(before).await {
        Ok(dropped) => dropped,
        Err(err) => return (0, Some(err)),
    };
    let (deleted, failed) =
        delete_in_batches(batch, |batch| store.expire_events(before, batch)).await;
    (dropped + deleted, failed)
}

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
