//! The SQL store, one for both backends: statements, transactions and row
//! mapping are written once here; a [`Dialect`] supplies only what truly
//! differs between SQLite and PostgreSQL (how a timestamp is bound, the one
//! statement whose functions differ, row locking, claiming outbox rows,
//! sorting errors, the migrations).
//!
//! Statements use `$N` placeholders, which both drivers accept.
//!
//! A batch of writes runs in one transaction. Each write checks what would
//! reject it (a taken email, a missing user) within its statements, so that
//! a rejection changes nothing and fails no statement: the rest of the
//! batch commits. A statement that fails anyway (a race those checks cannot
//! see, such as two transactions taking one email at once; PostgreSQL then
//! aborts the whole transaction) rolls the batch back, and each of its
//! writes runs again in a transaction of its own, where the error is that
//! write's own outcome.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::error::DatabaseError;
use sqlx::migrate::Migrate;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};
use uuid::Uuid;

use super::counts::{CountKey, Counts, events_total, users_total};
use super::migrate::{self, Embedded};
use super::purge::DeferredDeletes;
use super::rows::{event_columns, event_from_row, user_columns, user_from_row};
use super::{
    IdempotencyKey, OutboxBacklog, OutboxRow, Outcome, PoolStats, Store, StoreError, StoreResult,
    StoredResponse, Waiting, Write, Written,
};
use crate::domain::{Activity, Event, EventFilter, EventMessage, Key, Page, PageOf, User};

/// What one SQL backend does its own way.
#[async_trait]
pub(crate) trait Dialect: Send + Sync + 'static {
    type Db: Database;
    /// How this backend stores a timestamp.
    type Time: for<'q> Encode<'q, Self::Db> + Type<Self::Db> + Clone + Send + 'static;

    /// Short name for logs and health checks.
    const NAME: &'static str;
    /// The backend's migrations.
    const MIGRATIONS: Embedded;
    /// The function that takes the later of two times (the backends name
    /// it differently).
    const LATER_OF: &'static str;
    /// Appended to the `SELECT` that finds the user to delete: locks the
    /// row, so that no event is added between deleting the user's events
    /// and the user (SQLite needs none: it has a single writer).
    const LOCK_ROW: &'static str;
    /// Whether a deleted user's events are removed after the user, in
    /// short transactions, rather than with it (see [`super::purge`]):
    /// meanwhile the user is listed in `deleted_users`, and reads hide its
    /// events.
    const DEFERRED_EVENT_DELETES: bool;
    /// How a generated list (a multi-row `VALUES`, an `IN`) numbers its
    /// bind parameters: `$` (`$1`) on PostgreSQL, `?` (`?1`) on SQLite.
    const PARAM: &'static str;
    /// Whether a list that holds every parameter of its statement leaves
    /// them unnumbered (`?`, bound in order). SQLite keeps each named or
    /// numbered parameter in a list that it searches, by name, for every
    /// new `$N`, and sqlx searches it again, by number, for each parameter
    /// it binds: in a batch's statements of hundreds of parameters, most
    /// of a write's time on the one writer connection went to that.
    const UNNUMBERED_PARAMS: bool;

    fn time(at: &DateTime<Utc>) -> Self::Time;

    /// What a database error means to the caller, where it means more than
    /// "something broke".
    fn sort(err: &dyn DatabaseError) -> Option<Sorted>;

    /// Sorts a driver error: constraint violations the API answers with a
    /// 4xx, transient conditions as `Unavailable`, the rest as `Other`.
    fn classify(err: sqlx::Error, context: &'static str) -> StoreError {
        match err.as_database_error().and_then(Self::sort) {
            Some(Sorted::EmailTaken) => StoreError::EmailTaken,
            Some(Sorted::UserNotFound) => StoreError::UserNotFound,
            Some(Sorted::Unavailable) => StoreError::Unavailable(std::sync::Arc::new(err)),
            None => StoreError::from_sqlx(err, context),
        }
    }

    /// Whether the error is a conflict with a concurrent transaction
    /// (a deadlock, a serialization failure): a batch that meets one runs
    /// again one write at a time, where such conflicts are far less likely,
    /// rather than failing every write in it.
    fn is_conflict(_err: &sqlx::Error) -> bool {
        false
    }

    /// Leases up to `limit` rows that no one holds, oldest first, to
    /// `holder`.
    async fn claim_outbox(
        pool: &Pool<Self::Db>,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, sqlx::Error>;

    /// Extends `holder`'s lease on the rows `ids` (there are some) that it
    /// still holds; returns their ids.
    async fn renew_outbox(
        pool: &Pool<Self::Db>,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<i64>, sqlx::Error>;
}

/// The database errors a [`Dialect`] recognizes.
pub(crate) enum Sorted {
    /// The unique constraint on users' email.
    EmailTaken,
    /// The foreign key from an event to its user.
    UserNotFound,
    /// Contention or a server going away: retrying later can succeed.
    Unavailable,
}

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
}

impl<D: Dialect> SqlStore<D> {
    pub(crate) fn new(writer: NamedPool<D::Db>, reader: Option<NamedPool<D::Db>>) -> Self {
        Self {
            writer,
            reader,
            deferred_deletes: None,
        }
    }

    /// The task that removes deleted users' events, for a dialect that
    /// defers them.
    pub(crate) fn with_deferred_deletes(mut self, task: DeferredDeletes) -> Self {
        self.deferred_deletes = Some(task);
        self
    }

    /// The statement listing users: binds the seek's key if `seek`, then
    /// `LIMIT` and `OFFSET`.
    fn list_users_sql(seek: bool) -> String {
        let conditions: Vec<String> = seek.then(|| seek_sql(1)).into_iter().collect();
        list_sql(
            user_columns!(),
            "users",
            &conditions,
            1 + 2 * conditions.len(),
        )
    }

    /// The statement listing events: binds the filter's values, the seek's
    /// key if `seek`, then `LIMIT` and `OFFSET`.
    fn list_events_sql(filter: &EventFilter, seek: bool) -> String {
        let mut conditions = event_filter_sql(filter);
        let mut next = conditions.len() + 1;
        conditions.extend(Self::visible_events().map(str::to_owned));
        if seek {
            conditions.push(seek_sql(next));
            next += 2;
        }
        list_sql(event_columns!(), "events", &conditions, next)
    }

    /// The condition that hides the events of deleted users whose events
    /// are still being removed.
    fn visible_events() -> Option<&'static str> {
        D::DEFERRED_EVENT_DELETES.then_some("user_id NOT IN (SELECT user_id FROM deleted_users)")
    }

    fn reader(&self) -> &NamedPool<D::Db> {
        self.reader.as_ref().unwrap_or(&self.writer)
    }
}

/// The order in which a batch's writes run: new users by email, then
/// updates and deletes by user id, then new events and applied messages by
/// user id (each in arrival order among equals). Two batches that touch the
/// same rows then lock them in one order and wait for each other, instead
/// of deadlocking. Any order is right: the writes of a batch were sent
/// concurrently, and none has been answered yet.
fn lock_order(writes: &[Write]) -> Vec<usize> {
    let key = |write: &Write| match write.effect() {
        Write::CreateUser { user, .. } => (0, user.email.clone()),
        Write::UpdateUser { id, .. } | Write::DeleteUser { id, .. } => (1, id.to_string()),
        Write::CreateEvent { event, .. } => (2, event.user_id.to_string()),
        Write::ApplyMessage(message) => (3, message.user_id.to_string()),
        Write::Idempotent { .. } => unreachable!("BUG: an idempotency key wraps one effect"),
    };
    let mut order: Vec<usize> = (0..writes.len()).collect();
    // Stable: equal keys keep their arrival order.
    order.sort_by_cached_key(|&i| key(&writes[i]));
    order
}

/// Most rows one multi-row statement writes: at most 6 parameters a row,
/// 3,000 a statement, well within both databases' limits (SQLite 32,766,
/// PostgreSQL 65,535).
const ROWS_PER_STATEMENT: usize = 500;

/// `($1, …, $width), ($width+1, …), …`: the placeholders of `rows` rows of
/// `width` values, for a multi-row `VALUES` that holds every parameter of
/// its statement.
fn values<D: Dialect>(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * (width * 6 + 4));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        push_params::<D>(&mut sql, row * width + 1, width, true);
        sql.push(')');
    }
    sql
}

/// The writes that a batch applies together, a run of one kind at a time,
/// in a few statements for the whole run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetKind {
    Users,
    Events,
    Messages,
}

/// Which run `write` can join; `None`: it is applied on its own (updates,
/// deletes, and writes with an idempotency key, which is claimed first).
fn set_kind(write: &Write) -> Option<SetKind> {
    match write {
        Write::CreateUser { .. } => Some(SetKind::Users),
        Write::CreateEvent { .. } => Some(SetKind::Events),
        Write::ApplyMessage(_) => Some(SetKind::Messages),
        Write::UpdateUser { .. } | Write::DeleteUser { .. } | Write::Idempotent { .. } => None,
    }
}

/// The writes `run` (indexes into `writes`) as `pick` takes each apart;
/// `pick` answers `None` only for a write of another kind.
fn members<'w, T>(
    run: &[usize],
    writes: &'w [Write],
    pick: impl Fn(&'w Write) -> Option<T>,
) -> Vec<T> {
    run.iter()
        .map(|&i| pick(&writes[i]).expect("BUG: a run holds writes of one kind"))
        .collect()
}

/// Whether a statement over `rows` rows (a multi-row `VALUES`, an `IN`
/// list) stays prepared on its connection for the next call. One-row ones
/// recur; every other size would stay as a statement of its own, on each
/// connection, up to sqlx's hundred: on SQLite, megabytes of the process's
/// memory for statements that rarely come again.
pub(crate) fn cached(rows: usize) -> bool {
    rows == 1
}

/// `($1, $2, …)`: `n` placeholders, for an `IN` that holds every parameter
/// of its statement.
fn placeholders<D: Dialect>(n: usize) -> String {
    let mut sql = String::from("(");
    push_params::<D>(&mut sql, 1, n, true);
    sql.push(')');
    sql
}

/// `($first, …)`: `n` placeholders from `$first` on, for an `IN` after
/// parameters of the statement's own.
pub(crate) fn placeholders_from<D: Dialect>(first: usize, n: usize) -> String {
    let mut sql = String::from("(");
    push_params::<D>(&mut sql, first, n, false);
    sql.push(')');
    sql
}

/// Appends the bind parameters `first..first + n`, comma-separated, as
/// the dialect writes them; `in_order`: they are all of the statement's
/// parameters from the first on, so SQLite may leave them unnumbered.
fn push_params<D: Dialect>(sql: &mut String, first: usize, n: usize, in_order: bool) {
    use std::fmt::Write as _;
    for i in first..first + n {
        if i > first {
            sql.push_str(", ");
        }
        if in_order && D::UNNUMBERED_PARAMS {
            sql.push('?');
        } else {
            let _ = write!(sql, "{}{i}", D::PARAM);
        }
    }
}

/// The conditions of the filter's present fields, with placeholders from
/// `$1` in the order [`EventFilter`]'s values are bound.
fn event_filter_sql(filter: &EventFilter) -> Vec<String> {
    let mut conditions = Vec::new();
    if filter.user_id.is_some() {
        conditions.push(format!("user_id = ${}", conditions.len() + 1));
    }
    if filter.event_type.is_some() {
        conditions.push(format!("type = ${}", conditions.len() + 1));
    }
    conditions
}

/// The condition of a keyset seek past the key bound at `$n` (time) and
/// `$n+1` (id), in the lists' order (newest first). Spelled out rather than
/// as a row value, so that the first column bounds an index range on both
/// databases; the index keeps the order, and the rest skips the few rows
/// that share the key's time.
fn seek_sql(n: usize) -> String {
    format!(
        "created_at <= ${n} AND (created_at < ${n} OR id < ${})",
        n + 1
    )
}

/// `SELECT … FROM table [WHERE …] ORDER BY <the lists' order> LIMIT $n
/// OFFSET $n+1`, where `n` follows the conditions' placeholders.
fn list_sql(columns: &str, table: &str, conditions: &[String], n: usize) -> String {
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT {columns} FROM {table}{filter} ORDER BY created_at DESC, id DESC \
         LIMIT ${n} OFFSET ${}",
        n + 1
    )
}

/// Binds the filter's present values, in [`event_filter_sql`]'s order.
fn bind_event_filter<'q, DB: Database>(
    mut query: Query<'q, DB, DB::Arguments<'q>>,
    filter: &EventFilter,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    Uuid: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    if let Some(user_id) = filter.user_id {
        query = query.bind(user_id);
    }
    if let Some(event_type) = &filter.event_type {
        query = query.bind(event_type.as_str().to_owned());
    }
    query
}

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
            for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
            for<'q> DateTime<Utc>: Decode<'q, D::Db> + Type<D::Db>,
            for<'r> &'r str: ColumnIndex<<D::Db as Database>::Row>,
            usize: ColumnIndex<<D::Db as Database>::Row>,
            <D::Db as Database>::Connection: Migrate,
            D::Db: HasStatementCache,
        {
            $($body)*
        }
    };
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
    async fn begin(pool: &NamedPool<D::Db>) -> StoreResult<Transaction<'static, D::Db>> {
        let connections = pool.pool.clone();
        let begun = pool
            .waiting
            .on(tokio::spawn(async move { connections.begin().await }))
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

    /// Inserts the outbox rows of `messages`, in this order (their ids
    /// grow with it, and the relay publishes in id order).
    async fn insert_outbox(
        conn: &mut <D::Db as Database>::Connection,
        messages: &[&EventMessage],
    ) -> StoreResult<()> {
        for chunk in messages.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO outbox \
                 (message_id, key, payload, created_at, traceparent, tracestate) VALUES {}",
                values::<D>(chunk.len(), 6)
            );
            let query = sqlx::query(&sql).persistent(cached(chunk.len()));
            let query = chunk.iter().fold(query, |query, message| {
                let trace = message.trace.as_ref();
                query
                    .bind(message.id)
                    .bind(message.key())
                    .bind(message.to_json())
                    .bind(D::time(&message.timestamp))
                    .bind(trace.map(|t| t.traceparent().to_owned()))
                    .bind(trace.and_then(|t| t.tracestate()).map(str::to_owned))
            });
            query
                .execute(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to write the outbox rows"))?;
        }
        Ok(())
    }

    /// Inserts new users with their outbox rows, each unless its email is
    /// taken (by a stored user or one earlier in `users`): each one's
    /// outcome. One statement for the users, one for their outbox rows.
    async fn create_users(
        conn: &mut <D::Db as Database>::Connection,
        users: &[(&User, &EventMessage)],
        counts: &mut Counts,
    ) -> StoreResult<Vec<Outcome>> {
        let mut inserted: HashSet<Uuid> = HashSet::with_capacity(users.len());
        for chunk in users.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO users (id, email, first_name, last_name, created_at, updated_at) \
                 VALUES {} ON CONFLICT DO NOTHING RETURNING id",
                values::<D>(chunk.len(), 6)
            );
            let query = sqlx::query_scalar::<_, Uuid>(&sql).persistent(cached(chunk.len()));
            let query = chunk.iter().fold(query, |query, (user, _)| {
                query
                    .bind(user.id)
                    .bind(user.email.clone())
                    .bind(user.first_name.clone())
                    .bind(user.last_name.clone())
                    .bind(D::time(&user.created_at))
                    .bind(D::time(&user.updated_at))
            });
            inserted.extend(
                query
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| D::classify(e, "failed to insert the users"))?,
            );
        }
        // The ids are fresh, so a conflict was on the email.
        let created: Vec<&EventMessage> = users
            .iter()
            .filter(|(user, _)| inserted.contains(&user.id))
            .map(|(_, message)| *message)
            .collect();
        Self::insert_outbox(conn, &created).await?;
        counts.add(users_total(), created.len() as i64);
        Ok(users
            .iter()
            .map(|(user, _)| match inserted.contains(&user.id) {
                true => Ok(Written::Created),
                false => Err(StoreError::EmailTaken),
            })
            .collect())
    }

    /// Inserts new events with their outbox rows, each unless its user does
    /// not exist: each one's outcome. One statement for the events, one for
    /// their outbox rows.
    async fn create_events(
        conn: &mut <D::Db as Database>::Connection,
        events: &[(&Event, &EventMessage)],
        counts: &mut Counts,
    ) -> StoreResult<Vec<Outcome>> {
        let mut inserted: HashSet<Uuid> = HashSet::with_capacity(events.len());
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            // Both databases name the columns of a VALUES list column1, …
            let sql = format!(
                "INSERT INTO events (id, user_id, type, data, created_at) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5 \
                 FROM (VALUES {}) AS v \
                 WHERE EXISTS (SELECT 1 FROM users WHERE users.id = v.column2) RETURNING id",
                values::<D>(chunk.len(), 5)
            );
            let query = sqlx::query_scalar::<_, Uuid>(&sql).persistent(cached(chunk.len()));
            let query = chunk.iter().fold(query, |query, (event, _)| {
                query
                    .bind(event.id)
                    .bind(event.user_id)
                    .bind(event.event_type.clone())
                    .bind(event.data.clone())
                    .bind(D::time(&event.created_at))
            });
            inserted.extend(
                query
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| D::classify(e, "failed to insert the events"))?,
            );
        }
        let mut created = Vec::with_capacity(inserted.len());
        let outcomes = events
            .iter()
            .map(|(event, message)| {
                if !inserted.contains(&event.id) {
                    return Err(StoreError::UserNotFound);
                }
                created.push(*message);
                counts.add_event(event.user_id, &event.event_type, 1);
                Ok(Written::Created)
            })
            .collect();
        Self::insert_outbox(conn, &created).await?;
        Ok(outcomes)
    }

    /// One write's statements, on a transaction the caller commits.
    /// `Ok(Err(_))`: the write is rejected and changed nothing; `Err(_)`: a
    /// statement failed, and the transaction may be unusable.
    async fn apply(
        conn: &mut <D::Db as Database>::Connection,
        write: &Write,
        counts: &mut Counts,
    ) -> StoreResult<Outcome> {
        let Write::Idempotent { key, status, response, write } = write else {
            return Self::apply_effect(conn, write, counts).await;
        };
        // The key first: a transaction that recorded it already (and, on
        // PostgreSQL, one that is recording it now, which this one waits
        // for) keeps the effect from happening twice.
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys \
             (scope, key, request_hash, status, response, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, \
             status = excluded.status, response = excluded.response, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE idempotency_keys.expires_at <= excluded.created_at RETURNING key",
        )
        .bind(key.scope.clone())
        .bind(key.key.clone())
        .bind(key.request_hash.clone())
        .bind(i64::from(*status))
        .bind(response.clone())
        .bind(D::time(&Utc::now()))
        .bind(D::time(&key.expires_at))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| D::classify(e, "failed to record the idempotency key"))?;
        if claimed.is_none() {
            return Ok(Err(StoreError::IdempotencyKeyTaken));
        }
        let outcome = Self::apply_effect(conn, write, counts).await?;
        if outcome.is_err() {
            // Only successes are replayed: the key is free for a retry.
            Self::forget_idempotency_key(conn, key).await?;
        }
        Ok(outcome)
    }

    async fn forget_idempotency_key(
        conn: &mut <D::Db as Database>::Connection,
        key: &IdempotencyKey,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(key.scope.clone())
            .bind(key.key.clone())
            .execute(conn)
            .await
            .map_err(|e| D::classify(e, "failed to free the idempotency key"))?;
        Ok(())
    }

    /// [`Self::apply`] for a write without an idempotency key.
    async fn apply_effect(
        conn: &mut <D::Db as Database>::Connection,
        write: &Write,
        counts: &mut Counts,
    ) -> StoreResult<Outcome> {
        match write {
            Write::Idempotent { .. } => unreachable!("BUG: an idempotency key wraps one effect"),
            Write::CreateUser { user, message } => {
                let mut outcome = Self::create_users(conn, &[(user, message)], counts).await?;
                Ok(outcome.pop().expect("BUG: one outcome a user"))
            }
            Write::UpdateUser {
                id,
                patch,
                at,
                trace,
            } => {
                let updated = sqlx::query(concat!(
                    "UPDATE users SET email = COALESCE($1, email), \
                     first_name = COALESCE($2, first_name), \
                     last_name = COALESCE($3, last_name), updated_at = $4 WHERE id = $5 \
                     AND NOT EXISTS (SELECT 1 FROM users WHERE email = $1 AND id <> $5) RETURNING ",
                    user_columns!()
                ))
                .bind(patch.email.as_ref().map(|e| e.as_str().to_owned()))
                .bind(patch.first_name.as_ref().map(|n| n.as_str().to_owned()))
                .bind(patch.last_name.as_ref().map(|n| n.as_str().to_owned()))
                .bind(D::time(at))
                .bind(*id)
                .try_map(|row| user_from_row(&row))
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to update the user"))?;
                let Some(user) = updated else {
                    let exists = Self::user_exists(conn, *id).await?;
                    let rejection = if exists {
                        StoreError::EmailTaken
                    } else {
                        StoreError::UserNotFound
                    };
                    return Ok(Err(rejection));
                };
                let message = EventMessage::for_user(EventMessage::USER_UPDATED, &user, *at)
                    .with_trace(trace.clone());
                Self::insert_outbox(conn, &[&message]).await?;
                Ok(Ok(Written::Updated(user)))
            }
            Write::DeleteUser { id, message } => {
                let select = format!("SELECT 1 FROM users WHERE id = $1{}", D::LOCK_ROW);
                let found = sqlx::query(&select)
                    .bind(*id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| D::classify(e, "failed to lock the user"))?;
                if found.is_none() {
                    return Ok(Err(StoreError::UserNotFound));
                }
                let event_ids: Vec<Uuid> = if D::DEFERRED_EVENT_DELETES {
                    // Their ids now (their cache entries must go), the
                    // rows later; the user's being listed hides them.
                    let ids: Vec<Uuid> =
                        sqlx::query_scalar("SELECT id FROM events WHERE user_id = $1")
                            .bind(*id)
                            .fetch_all(&mut *conn)
                            .await
                            .map_err(|e| D::classify(e, "failed to read the user's events"))?;
                    if !ids.is_empty() {
                        sqlx::query(
                            "INSERT INTO deleted_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
                        )
                        .bind(*id)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| D::classify(e, "failed to list the deleted user"))?;
                    }
                    ids
                } else {
                    // Events before the user: the cascade would delete
                    // them without telling us their ids.
                    sqlx::query_scalar("DELETE FROM events WHERE user_id = $1 RETURNING id")
                        .bind(*id)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(|e| D::classify(e, "failed to delete the user's events"))?
                };
                sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(*id)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| D::classify(e, "failed to delete the user"))?;
                Self::insert_outbox(conn, &[message]).await?;
                // The user's own totals go; what they counted leaves the
                // totals by type and of all events.
                let mut gone: Vec<(String, i64)> = sqlx::query_as(
                    "DELETE FROM row_counts WHERE scope = 'events' AND user_id = $1 \
                     RETURNING type, n",
                )
                .bind(*id)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to update the totals"))?;
                gone.extend(counts.take_user(*id));
                for (event_type, n) in gone {
                    let event_type = Some(event_type.as_str()).filter(|t| !t.is_empty());
                    counts.add(events_total(None, event_type), -n);
                }
                counts.add(users_total(), -1);
                Ok(Ok(Written::Deleted { event_ids }))
            }
            Write::CreateEvent { event, message } => {
                let mut outcome = Self::create_events(conn, &[(event, message)], counts).await?;
                Ok(outcome.pop().expect("BUG: one outcome an event"))
            }
            Write::ApplyMessage(message) => {
                let fresh = Self::apply_messages(conn, &[message]).await?;
                Ok(Ok(Written::Applied(fresh[0])))
            }
        }
    }

    /// Runs `statement` (a `DELETE` or an `UPDATE … SET …`) on the outbox
    /// rows `ids`.
    async fn change_outbox_rows(
        &self,
        statement: &str,
        ids: &[i64],
        context: &'static str,
    ) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!("{statement} WHERE id IN {}", placeholders::<D>(ids.len()));
        let query = sqlx::query(&sql).persistent(cached(ids.len()));
        let query = ids.iter().fold(query, |query, id| query.bind(*id));
        query
            .execute(&mut *Self::acquire(&self.writer).await?)
            .await
            .map_err(|e| D::classify(e, context))?;
        Ok(())
    }

    /// A page of a list: `select` (see [`list_sql`]; its binds done but
    /// `LIMIT` and `OFFSET`) reads the rows, and the total is the row of
    /// `row_counts` at `total`; in one transaction, so that they agree. One
    /// row more than the page is read: whether it exists says whether a
    /// next page does.
    async fn page_of<'q, T: Send + Unpin>(
        &self,
        total: CountKey,
        select: Query<'q, D::Db, <D::Db as Database>::Arguments<'q>>,
        page: Page,
        map: fn(&<D::Db as Database>::Row) -> Result<T, sqlx::Error>,
        key: fn(&T) -> Key,
    ) -> StoreResult<PageOf<T>> {
        let mut tx = Self::begin(self.reader()).await?;
        let (scope, user_id, kind) = total;
        let total: Option<(i64,)> = sqlx::query_as(
            "SELECT n FROM row_counts WHERE scope = $1 AND user_id = $2 AND type = $3",
        )
        .bind(scope.to_owned())
        .bind(user_id)
        .bind(kind)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| D::classify(e, "failed to read a total"))?;
        let mut items = select
            .bind(i64::from(page.limit) + 1)
            .bind(page.offset())
            .try_map(|row| map(&row))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| D::classify(e, "failed to list rows"))?;
        tx.commit()
            .await
            .map_err(|e| D::classify(e, "failed to end a read"))?;
        let more = items.len() > page.limit as usize;
        items.truncate(page.limit as usize);
        Ok(PageOf {
            next: items.last().filter(|_| more).map(key),
            items,
            total: total.map_or(0, |(n,)| n.try_into().unwrap_or_default()),
        })
    }

    /// Applies bus messages to their users' activity, each unless a message
    /// with its id was applied before (earlier in `messages` too); whether
    /// each was applied now. Three statements for any number of messages:
    /// the ids are recorded in one, and what the new ones add up to per user
    /// and per user and type is added in one each, in user id order (the
    /// order in which every batch locks those rows).
    async fn apply_messages(
        conn: &mut <D::Db as Database>::Connection,
        messages: &[&EventMessage],
    ) -> StoreResult<Vec<bool>> {
        let now = D::time(&Utc::now());
        let mut recorded: HashSet<Uuid> = HashSet::with_capacity(messages.len());
        for chunk in messages.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO processed_messages (message_id, processed_at) VALUES {} \
                 ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                values::<D>(chunk.len(), 2)
            );
            let query = sqlx::query_scalar::<_, Uuid>(&sql).persistent(cached(chunk.len()));
            let query = chunk.iter().fold(query, |query, message| {
                query.bind(message.id).bind(now.clone())
            });
            recorded.extend(
                query
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| D::classify(e, "failed to record the messages"))?,
            );
        }
        // A recorded id is new: its first message is the one applied.
        let fresh: Vec<bool> = messages.iter().map(|m| recorded.remove(&m.id)).collect();
        let mut totals: BTreeMap<Uuid, (i64, DateTime<Utc>)> = BTreeMap::new();
        let mut by_type: BTreeMap<(Uuid, &str), i64> = BTreeMap::new();
        for message in messages.iter().zip(&fresh).filter(|(_, f)| **f).map(|(m, _)| m) {
            let total = totals
                .entry(message.user_id)
                .or_insert((0, message.timestamp));
            total.0 += 1;
            total.1 = total.1.max(message.timestamp);
            *by_type
                .entry((message.user_id, message.event_type.as_str()))
                .or_default() += 1;
        }
        let totals: Vec<_> = totals.into_iter().collect();
        for chunk in totals.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO user_activity (user_id, total_events, last_event_at) VALUES {} \
                 ON CONFLICT (user_id) DO UPDATE SET \
                 total_events = user_activity.total_events + excluded.total_events, \
                 last_event_at = {}(user_activity.last_event_at, excluded.last_event_at)",
                values::<D>(chunk.len(), 3),
                D::LATER_OF
            );
            let query = sqlx::query(&sql).persistent(cached(chunk.len()));
            let query = chunk.iter().fold(query, |query, (user_id, (n, at))| {
                query.bind(*user_id).bind(*n).bind(D::time(at))
            });
            query
                .execute(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to update the activity"))?;
        }
        let by_type: Vec<_> = by_type.into_iter().collect();
        for chunk in by_type.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO user_activity_types (user_id, type, count) VALUES {} \
                 ON CONFLICT (user_id, type) DO UPDATE SET \
                 count = user_activity_types.count + excluded.count",
                values::<D>(chunk.len(), 3)
            );
            let query = sqlx::query(&sql).persistent(cached(chunk.len()));
            let query = chunk.iter().fold(query, |query, ((user_id, kind), n)| {
                query.bind(*user_id).bind((*kind).to_owned()).bind(*n)
            });
            query
                .execute(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to update the activity"))?;
        }
        Ok(fresh)
    }

    /// Applies `counts` to `row_counts`, in key order.
    async fn apply_counts(
        conn: &mut <D::Db as Database>::Connection,
        counts: Counts,
    ) -> StoreResult<()> {
        let changes: Vec<(CountKey, i64)> =
            counts.0.into_iter().filter(|(_, delta)| *delta != 0).collect();
        for chunk in changes.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO row_counts (scope, user_id, type, n) VALUES {} \
                 ON CONFLICT (scope, user_id, type) DO UPDATE SET n = row_counts.n + excluded.n",
                values::<D>(chunk.len(), 4)
            );
            let query = sqlx::query(&sql).persistent(cached(chunk.len()));
            let query = chunk.iter().fold(query, |query, ((scope, user, kind), delta)| {
                query
                    .bind((*scope).to_owned())
                    .bind(*user)
                    .bind(kind.clone())
                    .bind(*delta)
            });
            query
                .execute(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to update the totals"))?;
        }
        Ok(())
    }

    /// Applies the counts, then commits.
    async fn commit(mut tx: Transaction<'static, D::Db>, counts: Counts) -> StoreResult<()> {
        Self::apply_counts(&mut tx, counts).await?;
        tx.commit()
            .await
            .map_err(|e| D::classify(e, "failed to commit"))
    }

    async fn user_exists(conn: &mut <D::Db as Database>::Connection, id: Uuid) -> StoreResult<bool> {
        let found = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(|e| D::classify(e, "failed to read the user"))?;
        Ok(found.is_some())
    }

    /// Applies the writes in one transaction (see [`Store::write`]).
    async fn write_batch(&self, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
        if let [write] = writes {
            return Ok(vec![self.write_alone(write).await?]);
        }
        let mut tx = Self::begin(&self.writer).await?;
        let mut counts = Counts::default();
        let mut outcomes: Vec<Option<Outcome>> = writes.iter().map(|_| None).collect();
        let order = lock_order(writes);
        let applied: StoreResult<()> = async {
            // New users, new events and bus messages (each kind next to each
            // other in the lock order) take a few statements for a run of
            // them; the rest go one write at a time.
            let same_kind = |&a: &usize, &b: &usize| {
                set_kind(&writes[a]).is_some_and(|kind| set_kind(&writes[b]) == Some(kind))
            };
            for run in order.chunk_by(same_kind) {
                let run_outcomes = match set_kind(&writes[run[0]]) {
                    Some(SetKind::Users) => {
                        let users = members(run, writes, |write| match write {
                            Write::CreateUser { user, message } => Some((user, message)),
                            _ => None,
                        });
                        Self::create_users(&mut tx, &users, &mut counts).await?
                    }
                    Some(SetKind::Events) => {
                        let events = members(run, writes, |write| match write {
                            Write::CreateEvent { event, message } => Some((event, message)),
                            _ => None,
                        });
                        Self::create_events(&mut tx, &events, &mut counts).await?
                    }
                    Some(SetKind::Messages) => {
                        let messages = members(run, writes, |write| match write {
                            Write::ApplyMessage(message) => Some(message),
                            _ => None,
                        });
                        let fresh = Self::apply_messages(&mut tx, &messages).await?;
                        fresh.into_iter().map(|f| Ok(Written::Applied(f))).collect()
                    }
                    None => vec![Self::apply(&mut tx, &writes[run[0]], &mut counts).await?],
                };
                for (&i, outcome) in run.iter().zip(run_outcomes) {
                    outcomes[i] = Some(outcome);
                }
            }
            Ok(())
        }
        .await;
        match applied {
            Ok(()) => {}
            Err(StoreError::Unavailable(err)) if !D::is_conflict(&err) => {
                return Err(StoreError::Unavailable(err));
            }
            Err(err) => {
                tracing::debug!(
                    error = format!("{:#}", anyhow::Error::new(err)),
                    writes = writes.len(),
                    "a write of a batch failed; applying them one by one"
                );
                drop(tx);
                let mut outcomes = Vec::with_capacity(writes.len());
                for write in writes {
                    outcomes.push(self.write_alone(write).await?);
                }
                return Ok(outcomes);
            }
        }
        Self::commit(tx, counts).await?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.expect("BUG: every write of the batch was applied"))
            .collect())
    }

    /// One write in a transaction of its own: a statement's failure is this
    /// write's outcome, unless the database is unavailable.
    async fn write_alone(&self, write: &Write) -> StoreResult<Outcome> {
        let mut tx = Self::begin(&self.writer).await?;
        let mut counts = Counts::default();
        match Self::apply(&mut tx, write, &mut counts).await {
            Ok(Ok(written)) => match Self::commit(tx, counts).await {
                Ok(()) => Ok(Ok(written)),
                Err(err @ StoreError::Unavailable(_)) => Err(err),
                Err(err) => Ok(Err(err)),
            },
            Ok(rejected) => Ok(rejected),
            Err(err @ StoreError::Unavailable(_)) => Err(err),
            Err(err) => Ok(Err(err)),
        }
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
            .map(NamedPool::stats)
            .collect()
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrator = migrate::migrator(D::MIGRATIONS)
            .await
            .with_context(|| format!("failed to load the {} migrations", D::NAME))?;
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
        let mut conn = Self::acquire(self.reader()).await?;
        sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .try_map(|row| user_from_row(&row))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| D::classify(e, "failed to read the user"))
    }

    async fn list_users(&self, page: Page) -> StoreResult<PageOf<User>> {
        let select = Self::list_users_sql(page.after().is_some());
        let mut query = sqlx::query(&select);
        if let Some(after) = page.after() {
            query = query.bind(D::time(&after.created_at)).bind(after.id);
        }
        self.page_of(users_total(), query, page, |row| user_from_row(row), |user: &User| Key {
            created_at: user.created_at,
            id: user.id,
        })
        .await
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        let mut conn = Self::acquire(self.reader()).await?;
        let mut select = concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1").to_owned();
        if let Some(visible) = Self::visible_events() {
            select = format!("{select} AND {visible}");
        }
        sqlx::query(&select)
            .bind(id)
            .try_map(|row| event_from_row(&row))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| D::classify(e, "failed to read the event"))
    }

    async fn list_events(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>> {
        if filter.user_id == Some(Uuid::nil()) {
            // No user has the nil id, which keys the totals of all users.
            return Ok(PageOf {
                items: Vec::new(),
                total: 0,
                next: None,
            });
        }
        let select = Self::list_events_sql(filter, page.after().is_some());
        let mut query = bind_event_filter(sqlx::query(&select), filter);
        if let Some(after) = page.after() {
            query = query.bind(D::time(&after.created_at)).bind(after.id);
        }
        let total = events_total(filter.user_id, filter.event_type.as_ref().map(|t| t.as_str()));
        self.page_of(total, query, page, |row| event_from_row(row), |event: &Event| Key {
            created_at: event.created_at,
            id: event.id,
        })
        .await
    }

    async fn claim_outbox(
        &self,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxRow>> {
        let mut rows = self
            .writer
            .waiting
            .on(D::claim_outbox(&self.writer.pool, holder, limit, lease))
            .await
            .map_err(|e| D::classify(e, "failed to claim outbox rows"))?;
        // RETURNING gives no order guarantee; publishing follows the outbox.
        rows.sort_unstable_by_key(|r| r.id);
        Ok(rows)
    }

    async fn complete_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        self.change_outbox_rows("DELETE FROM outbox", ids, "failed to delete published outbox rows")
            .await
    }

    async fn renew_outbox(
        &self,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .waiting
            .on(D::renew_outbox(&self.writer.pool, holder, ids, lease))
            .await
            .map_err(|e| D::classify(e, "failed to renew the outbox lease"))
    }

    async fn release_outbox(&self, holder: Uuid, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET locked_until = NULL, locked_by = NULL \
             WHERE locked_by = $1 AND id IN {}",
            placeholders_from::<D>(2, ids.len())
        );
        let query = ids
            .iter()
            .fold(sqlx::query(&sql).persistent(cached(ids.len())).bind(holder), |query, id| {
                query.bind(*id)
            });
        query
            .execute(&mut *Self::acquire(&self.writer).await?)
            .await
            .map_err(|e| D::classify(e, "failed to release outbox rows"))?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let (rows, oldest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox")
                .fetch_one(&mut *Self::acquire(self.reader()).await?)
                .await
                .map_err(|e| D::classify(e, "failed to measure the outbox"))?;
        Ok(OutboxBacklog {
            rows: rows.try_into().unwrap_or_default(),
            oldest,
        })
    }

    async fn get_activity(&self, user_id: Uuid) -> StoreResult<Activity> {
        let mut tx = Self::begin(self.reader()).await?;
        let summary: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT total_events, last_event_at FROM user_activity WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| D::classify(e, "failed to read the activity"))?;
        let by_type: Vec<(String, i64)> =
            sqlx::query_as("SELECT type, count FROM user_activity_types WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| D::classify(e, "failed to read the activity"))?;
        tx.commit()
            .await
            .map_err(|e| D::classify(e, "failed to end a read"))?;
        Ok(super::activity_from(user_id, summary, by_type))
    }

    async fn idempotent_response(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<StoredResponse>> {
        let found: Option<(String, i64, String)> = sqlx::query_as(
            "SELECT request_hash, status, response FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(scope.to_owned())
        .bind(key.to_owned())
        .bind(D::time(&Utc::now()))
        .fetch_optional(&mut *Self::acquire(self.reader()).await?)
        .await
        .map_err(|e| D::classify(e, "failed to read the idempotency key"))?;
        Ok(found.map(|(request_hash, status, body)| StoredResponse {
            request_hash,
            status: u16::try_from(status).unwrap_or(500),
            body,
        }))
    }

    async fn purge_idempotency_keys(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<usize> {
        let purged: Vec<String> = sqlx::query_scalar(
            "DELETE FROM idempotency_keys WHERE (scope, key) IN \
             (SELECT scope, key FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2) \
             RETURNING key",
        )
        .bind(D::time(&now))
        .bind(i64::from(limit))
        .fetch_all(&mut *Self::acquire(&self.writer).await?)
        .await
        .map_err(|e| D::classify(e, "failed to purge idempotency keys"))?;
        Ok(purged.len())
    }

    async fn close(&self) {
        if let Some(task) = &self.deferred_deletes {
            task.stop().await;
        }
        self.writer.pool.close().await;
        if let Some(reader) = &self.reader {
            reader.pool.close().await;
        }
    }
}
}

#[cfg(test)]
mod tests {
    //! The batch contract, on both backends: each write of a batch gets its
    //! own outcome, and a rejected write leaves no trace while the others
    //! commit with their outbox rows.

    use std::sync::Arc;

    use super::*;
    use sqlx::postgres::PgConnectOptions;

    use crate::domain::{self, Email, PersonName, UserPatch};
    use crate::store::postgres::{Pg, PostgresStore};
    use crate::store::sqlite::{Lite, SqliteStore};

    /// PostgreSQL numbers every parameter; SQLite leaves a list that holds
    /// all of its statement's parameters unnumbered, and numbers one that
    /// follows the statement's own (`$1`, `$2`) from where they end. The
    /// batch tests below bind through both forms on both backends.
    #[test]
    fn generated_lists_write_parameters_as_each_backend_finds_them() {
        assert_eq!(values::<Pg>(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values::<Lite>(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(placeholders::<Pg>(2), "($1, $2)");
        assert_eq!(placeholders::<Lite>(2), "(?, ?)");
        assert_eq!(placeholders_from::<Pg>(3, 2), "($3, $4)");
        assert_eq!(placeholders_from::<Lite>(3, 2), "(?3, ?4)");
    }

    fn user(email: &str) -> (User, EventMessage) {
        let now = domain::now();
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

    fn event(user_id: Uuid) -> Write {
        let event = Event {
            id: Uuid::now_v7(),
            user_id,
            event_type: "click".into(),
            data: "{}".into(),
            created_at: domain::now(),
        };
        Write::CreateEvent {
            message: EventMessage::for_event(&event),
            event,
        }
    }

    fn kinds(outcomes: &[Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                Ok(Written::Created) => "created".to_owned(),
                Ok(Written::Updated(u)) => format!("updated {}", u.first_name),
                Ok(Written::Deleted { event_ids }) => format!("deleted {}", event_ids.len()),
                Ok(Written::Applied(fresh)) => format!("applied {fresh}"),
                Err(e) => format!("error: {e}"),
            })
            .collect()
    }

    async fn batch_writes_have_their_own_outcomes(store: Arc<dyn Store>) {
        store.migrate().await.unwrap();
        let (ada, ada_created) = user("ada@example.com");
        let (twin, twin_created) = user("ada@example.com");
        let (grace, grace_created) = user("grace@example.com");
        let patch = UserPatch {
            first_name: Some(PersonName::parse("first_name", "Augusta").unwrap()),
            ..UserPatch::default()
        };
        let steal = UserPatch {
            email: Some(Email::parse("email", "ada@example.com").unwrap()),
            ..UserPatch::default()
        };
        // Grace was created before: a client names only users it has
        // seen created.
        let written = store
            .write_one(Write::CreateUser {
                user: grace.clone(),
                message: grace_created,
            })
            .await;
        assert!(matches!(written, Ok(Written::Created)), "{written:?}");
        let at = domain::now();
        let outcomes = store
            .write(&[
                Write::CreateUser {
                    user: ada.clone(),
                    message: ada_created,
                },
                Write::CreateUser {
                    user: twin.clone(),
                    message: twin_created,
                },
                event(ada.id),
                event(twin.id),
                Write::UpdateUser {
                    id: ada.id,
                    patch: patch.clone(),
                    at,
                    trace: None,
                },
                Write::UpdateUser {
                    id: grace.id,
                    patch: steal,
                    at,
                    trace: None,
                },
                Write::UpdateUser {
                    id: Uuid::now_v7(),
                    patch,
                    at,
                    trace: None,
                },
                Write::DeleteUser {
                    id: Uuid::now_v7(),
                    message: EventMessage::user_deleted(Uuid::now_v7(), at),
                },
            ])
            .await
            .unwrap();
        assert_eq!(
            kinds(&outcomes),
            [
                "created",
                "error: email is already taken",
                "created",
                "error: user does not exist",
                "updated Augusta",
                "error: email is already taken",
                "error: user does not exist",
                "error: user does not exist",
            ]
        );

        // What was rejected left nothing behind; the rest committed.
        assert_eq!(
            store.get_user(ada.id).await.unwrap().unwrap().first_name,
            "Augusta"
        );
        assert_eq!(
            store.get_user(grace.id).await.unwrap().unwrap().email,
            "grace@example.com"
        );
        assert!(store.get_user(twin.id).await.unwrap().is_none());
        let listed = store
            .list_events(&EventFilter::default(), Page::default())
            .await
            .unwrap();
        assert_eq!(listed.total, 1);
        assert_eq!(listed.items[0].user_id, ada.id);
        let outbox = store
            .claim_outbox(Uuid::new_v4(), 100, Duration::from_secs(60))
            .await
            .unwrap();
        let types: Vec<(String, String)> = outbox
            .iter()
            .map(|row| {
                let message: EventMessage = serde_json::from_str(&row.payload).unwrap();
                (row.key.clone(), message.event_type)
            })
            .collect();
        let (a, g) = (ada.id.to_string(), grace.id.to_string());
        // In the batch's lock order: new users, updates, then events.
        assert_eq!(
            types,
            [
                (g, "user_created".to_owned()),
                (a.clone(), "user_created".to_owned()),
                (a.clone(), "user_updated".to_owned()),
                (a.clone(), "click".to_owned()),
            ]
        );

        // A message applied twice in one batch counts once.
        let message = EventMessage::user_deleted(ada.id, domain::now());
        let applied = store
            .write(&[
                Write::ApplyMessage(message.clone()),
                Write::ApplyMessage(message),
                Write::DeleteUser {
                    id: ada.id,
                    message: EventMessage::user_deleted(ada.id, domain::now()),
                },
            ])
            .await
            .unwrap();
        assert_eq!(
            kinds(&applied),
            ["applied true", "applied false", "deleted 1"]
        );
        assert_eq!(store.get_activity(ada.id).await.unwrap().total_events, 1);
        assert!(store.get_user(ada.id).await.unwrap().is_none());

        // Messages for two users in one batch: each new one counts once,
        // by type, at its own time; one applied before and one repeated in
        // the batch count nothing.
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let message = |user_id: Uuid, kind: &str, seconds: i64| EventMessage {
            id: Uuid::now_v7(),
            user_id,
            event_type: kind.to_owned(),
            data: "{}".to_owned(),
            timestamp: DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap(),
            trace: None,
        };
        let before = message(first, "login", 5);
        assert_eq!(
            kinds(&[store.write_one(Write::ApplyMessage(before.clone())).await]),
            ["applied true"]
        );
        let repeated = message(second, "login", 1);
        let batch = [
            message(second, "click", 3),
            before,
            message(first, "click", 9),
            repeated.clone(),
            message(first, "login", 2),
            repeated,
            message(second, "click", 2),
        ];
        let applied = store.write(&batch.map(Write::ApplyMessage)).await.unwrap();
        assert_eq!(
            kinds(&applied),
            [
                "applied true",
                "applied false",
                "applied true",
                "applied true",
                "applied true",
                "applied false",
                "applied true",
            ]
        );
        let at = |seconds: i64| DateTime::from_timestamp(1_800_000_000 + seconds, 0);
        let first_activity = store.get_activity(first).await.unwrap();
        assert_eq!(first_activity.total_events, 3);
        assert_eq!(first_activity.events_by_type["login"], 2);
        assert_eq!(first_activity.events_by_type["click"], 1);
        assert_eq!(first_activity.last_event_at, at(9));
        let second_activity = store.get_activity(second).await.unwrap();
        assert_eq!(second_activity.total_events, 3);
        assert_eq!(second_activity.events_by_type["login"], 1);
        assert_eq!(second_activity.events_by_type["click"], 2);
        assert_eq!(second_activity.last_event_at, at(3));

        // Alone, a rejected write is still its own outcome, not the batch's.
        let (again, again_created) = user("grace@example.com");
        let alone = store
            .write_one(Write::CreateUser {
                user: again,
                message: again_created,
            })
            .await;
        assert!(matches!(alone, Err(StoreError::EmailTaken)), "{alone:?}");
    }

    #[test]
    fn batches_take_new_emails_then_users_then_events_each_in_key_order() {
        let (zoe, zoe_created) = user("zoe@example.com");
        let (ada, ada_created) = user("ada@example.com");
        let writes = [
            event(zoe.id),
            Write::CreateUser {
                user: zoe.clone(),
                message: zoe_created,
            },
            Write::UpdateUser {
                id: zoe.id,
                patch: UserPatch::default(),
                at: domain::now(),
                trace: None,
            },
            Write::CreateUser {
                user: ada.clone(),
                message: ada_created,
            },
            // Ada's id came after Zoe's (ids grow with time).
            Write::DeleteUser {
                id: ada.id,
                message: EventMessage::user_deleted(ada.id, domain::now()),
            },
        ];
        assert!(zoe.id < ada.id);
        assert_eq!(lock_order(&writes), [3, 1, 2, 4, 0]);
    }

    #[tokio::test]
    async fn sqlite_batches_give_each_write_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), 2, Duration::from_secs(5))
            .await
            .unwrap();
        batch_writes_have_their_own_outcomes(Arc::new(store)).await;
    }

    /// Forwards connections to `target`, holding back each chunk the
    /// server sends for `delay`: a database whose answers take that long.
    fn slow_proxy(target: (String, u16), delay: Duration) -> u16 {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect((target.0.as_str(), target.1)).unwrap();
                let (mut to_server, mut from_server) = (server.try_clone().unwrap(), server);
                let (mut from_client, mut to_client) = (client.try_clone().unwrap(), client);
                std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
                std::thread::spawn(move || {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf) {
                        std::thread::sleep(delay);
                        if to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    /// A request cancelled while its transaction begins (its client hung
    /// up) must not leave the connection inside that transaction: the next
    /// borrower's statements would run in it, keep its locks and vanish
    /// with it.
    #[tokio::test]
    #[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
    async fn postgres_begin_cancelled_midway_leaves_no_transaction_open() {
        use std::task::Poll;

        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
        let options = url.parse::<PgConnectOptions>().unwrap();
        let target = (options.get_host().to_owned(), options.get_port());
        // Answers 20 ms late, so that a begin is still waiting for BEGIN's
        // answer when its caller gives up.
        let port = slow_proxy(target, Duration::from_millis(20));
        // One connection, so that every borrower gets the one a cancelled
        // begin handed back; no ping on checkout, as in the service.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.host("127.0.0.1").port(port))
            .await
            .expect("PostgreSQL must be running (scripts/dev-services.sh)");
        let named = NamedPool::new("main", pool.clone());
        for round in 0..3 {
            {
                let mut begin = Box::pin(PostgresStore::begin(&named));
                // Polled once, then dropped: BEGIN is on its way, its
                // answer not read.
                let waiting =
                    std::future::poll_fn(|cx| Poll::Ready(begin.as_mut().poll(cx).is_pending()))
                        .await;
                assert!(waiting, "round {round}: begin finished without waiting");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Outside a transaction, a statement's transaction starts with
            // it; inside the leaked one, now() is the time of its BEGIN,
            // 100 ms ago.
            let in_transaction: bool =
                sqlx::query_scalar("SELECT now() < statement_timestamp() - interval '50 ms'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert!(
                !in_transaction,
                "round {round}: the connection came back inside the cancelled transaction"
            );
        }
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
    async fn postgres_batches_give_each_write_its_own_outcome() {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("PostgreSQL must be running (scripts/dev-services.sh)");
        let name = format!("highload_store_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = admin_url
            .parse::<PgConnectOptions>()
            .unwrap()
            .database(&name);
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect_lazy(
            options,
            4,
            Duration::from_secs(5),
        ));
        batch_writes_have_their_own_outcomes(Arc::clone(&store)).await;

        // A statement that fails (PostgreSQL refuses NUL in text, which
        // aborts the transaction) fails its own write alone: the batch runs
        // again one write at a time.
        let (user, created) = user("nul@example.com");
        let mut broken = event(user.id);
        if let Write::CreateEvent { event, .. } = &mut broken {
            event.data = "a\u{0}b".into();
        }
        let outcomes = store
            .write(&[
                Write::CreateUser {
                    user: user.clone(),
                    message: created,
                },
                broken,
                event(user.id),
            ])
            .await
            .unwrap();
        assert!(matches!(outcomes[0], Ok(Written::Created)), "{outcomes:?}");
        assert!(
            matches!(outcomes[1], Err(StoreError::Other(_))),
            "{outcomes:?}"
        );
        assert!(matches!(outcomes[2], Ok(Written::Created)), "{outcomes:?}");
        let filter = EventFilter {
            user_id: Some(user.id),
            ..EventFilter::default()
        };
        let listed = store.list_events(&filter, Page::default()).await.unwrap();
        assert_eq!(listed.total, 1);
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    }

    /// Leases: a held row is claimed by no one else; a holder renews and
    /// releases only rows that still carry its id; once a lease runs out
    /// another relay claims the row, and the first holder hears it lost it.
    async fn outbox_leases_belong_to_their_holder(store: Arc<dyn Store>) {
        let email = format!("lease-{}@example.com", Uuid::new_v4().simple());
        let (user, created) = user(&email);
        let written = store
            .write_one(Write::CreateUser {
                user,
                message: created,
            })
            .await;
        assert!(matches!(written, Ok(Written::Created)), "{written:?}");
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let long = Duration::from_secs(60);
        let ids_of = |rows: Vec<OutboxRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

        let ids = ids_of(store.claim_outbox(first, 100, long).await.unwrap());
        assert_eq!(ids.len(), 1);
        assert!(
            store
                .claim_outbox(second, 100, long)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.renew_outbox(first, &ids, long).await.unwrap(), ids);
        assert!(
            store
                .renew_outbox(second, &ids, long)
                .await
                .unwrap()
                .is_empty()
        );
        store.release_outbox(second, &ids).await.unwrap();
        assert!(
            store
                .claim_outbox(second, 100, long)
                .await
                .unwrap()
                .is_empty(),
            "a release by another relay leaves the lease alone"
        );

        // The first holder's lease runs out: the second claims the row.
        store
            .renew_outbox(first, &ids, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            ids_of(store.claim_outbox(second, 100, long).await.unwrap()),
            ids
        );
        assert!(
            store
                .renew_outbox(first, &ids, long)
                .await
                .unwrap()
                .is_empty(),
            "the first holder hears it lost the row"
        );
        store.release_outbox(first, &ids).await.unwrap();
        assert!(
            store
                .claim_outbox(first, 100, long)
                .await
                .unwrap()
                .is_empty(),
            "the second holder keeps it"
        );
        store.release_outbox(second, &ids).await.unwrap();
        assert_eq!(
            ids_of(store.claim_outbox(first, 100, long).await.unwrap()),
            ids
        );
        store.complete_outbox(&ids).await.unwrap();
        assert!(
            store
                .claim_outbox(second, 100, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Every way a list can be asked for: each filter, by page number or
    /// by cursor.
    fn list_shapes() -> Vec<(EventFilter, bool)> {
        let user_id = Some(Uuid::now_v7());
        let event_type = Some(crate::domain::EventType::parse("type", "click").unwrap());
        let filters = [
            EventFilter::default(),
            EventFilter {
                user_id,
                ..EventFilter::default()
            },
            EventFilter {
                event_type: event_type.clone(),
                ..EventFilter::default()
            },
            EventFilter {
                user_id,
                event_type,
            },
        ];
        filters
            .into_iter()
            .flat_map(|filter| [(filter.clone(), false), (filter, true)])
            .collect()
    }

    #[tokio::test]
    async fn sqlite_outbox_leases_belong_to_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::migrated_in(dir.path(), 2).await;
        outbox_leases_belong_to_their_holder(Arc::new(store)).await;
    }

    /// Each list reads an index in the list's order: no sort, however deep
    /// the page.
    #[tokio::test]
    async fn sqlite_lists_read_an_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let _store = SqliteStore::migrated_in(dir.path(), 1).await;
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
        )
        .await
        .unwrap();
        let mut statements = vec![
            ("users", SqliteStore::list_users_sql(false)),
            ("users", SqliteStore::list_users_sql(true)),
        ];
        for (filter, seek) in list_shapes() {
            statements.push(("events", SqliteStore::list_events_sql(&filter, seek)));
        }
        for (table, sql) in statements {
            let plan = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
                .collect::<Vec<_>>()
                .join("\n");
            // The index the table is read through, named in the plan's line
            // for the table: "SCAN|SEARCH <table> USING [COVERING] INDEX <name> …".
            let index = plan
                .lines()
                .find(|line| {
                    line.contains(&format!("SCAN {table} USING"))
                        || line.contains(&format!("SEARCH {table} USING"))
                })
                .and_then(|line| line.split("INDEX ").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            let Some(index) = index else {
                panic!("{sql}: no index read\n{plan}")
            };
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
            if table == "events" {
                // Every event list tests user_id against deleted_users on
                // each row it passes, those an OFFSET skips too: the index
                // must hold user_id, or each of them is a seek into the
                // table.
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_index_info(?)")
                        .bind(index)
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                assert!(
                    columns.iter().any(|c| c == "user_id"),
                    "{sql} reads {index} ({columns:?})\n{plan}"
                );
            }
        }
    }

    /// A database of its own on the PostgreSQL of `TEST_DATABASE_URL`,
    /// and how to reach it; the caller drops it.
    async fn postgres_database() -> (sqlx::PgPool, String, PgConnectOptions) {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("PostgreSQL must be running (scripts/dev-services.sh)");
        let name = format!("highload_store_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = admin_url
            .parse::<PgConnectOptions>()
            .unwrap()
            .database(&name);
        (admin, name, options)
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
    async fn postgres_outbox_leases_belong_to_their_holder_and_lists_read_an_index_in_order() {
        let (admin, name, options) = postgres_database().await;
        let store = PostgresStore::connect_lazy(options.clone(), 2, Duration::from_secs(5));
        store.migrate().await.unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        outbox_leases_belong_to_their_holder(Arc::clone(&store)).await;

        // The tables are empty, so any plan is cheap: price out the plans
        // that need no index in the lists' order. A list that no index can
        // serve in order still sorts, and that is what must not show.
        let pool = sqlx::PgPool::connect_with(options).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
            sqlx::query(&format!("SET LOCAL {setting} = off"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let now = crate::domain::now();
        let mut statements: Vec<(String, Option<EventFilter>, bool)> = vec![
            (PostgresStore::list_users_sql(false), None, false),
            (PostgresStore::list_users_sql(true), None, true),
        ];
        for (filter, seek) in list_shapes() {
            statements.push((
                PostgresStore::list_events_sql(&filter, seek),
                Some(filter),
                seek,
            ));
        }
        for (sql, filter, seek) in statements {
            let explain = format!("EXPLAIN {sql}");
            let mut query = sqlx::query(&explain);
            if let Some(filter) = &filter {
                query = bind_event_filter(query, filter);
            }
            if seek {
                query = query.bind(now).bind(Uuid::now_v7());
            }
            let plan: Vec<String> = query
                .bind(11_i64)
                .bind(0_i64)
                .try_map(|row: sqlx::postgres::PgRow| sqlx::Row::try_get::<String, _>(&row, 0))
                .fetch_all(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let plan = plan.join("\n");
            assert!(plan.contains("Index"), "{sql}\n{plan}");
            assert!(!plan.contains("Sort"), "{sql}\n{plan}");
        }
        tx.rollback().await.unwrap();
        pool.close().await;
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
