//! The write path: a batch of [`Write`]s in one transaction, each answered
//! with its own outcome. The rules of a batch, stated here once:
//!
//! - **One transaction**, committed once for the whole batch, with each
//!   write's outbox rows and the changes to the totals (`row_counts`).
//! - **Lock order.** The writes run as new users by email, then updates
//!   and deletes by user id, then new events and applied messages by user
//!   id, each in arrival order among equals ([`lock_order`]). Two batches
//!   that touch the same rows then lock them in one order and wait for each
//!   other, instead of deadlocking. Any order is right: the writes of a
//!   batch were sent concurrently, and none has been answered yet.
//! - **Runs.** New users, new events and bus messages, each kind next to
//!   each other in that order, take a few multi-row statements a run (at
//!   most [`ROWS_PER_STATEMENT`] rows each); updates, deletes and writes
//!   with an idempotency key (claimed first) go one at a time.
//! - **A rejection changes nothing.** Each write checks what would reject
//!   it (a taken email, a missing user) within its statements, so that a
//!   rejection fails no statement and the rest of the batch commits.
//! - **A failed statement reruns the batch one write at a time.** A
//!   statement that fails anyway (a race those checks cannot see, such as
//!   two transactions taking one email at once; PostgreSQL then aborts the
//!   whole transaction) rolls the batch back, and each of its writes runs
//!   again in a transaction of its own, where the error is that write's
//!   own outcome. An unavailable database fails the batch as a whole,
//!   unless the error is a conflict with another transaction (a deadlock,
//!   a serialization failure), which one write at a time makes unlikely.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};
use uuid::Uuid;

use super::SqlStore;
use super::dialect::Dialect;
use super::statements::{cached, values};
use crate::domain::{Event, EventMessage, User};
use crate::store::counts::{CountKey, Counts, events_total, users_total};
use crate::store::rows::{user_columns, user_from_row};
use crate::store::{IdempotencyKey, Outcome, StoreError, StoreResult, Write, Written};

/// The order in which a batch's writes run, as indexes into `writes` (the
/// lock order of the module's rules).
pub(super) fn lock_order(writes: &[Write]) -> Vec<usize> {
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

/// The kinds of write that make runs (see the module's rules).
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

with_driver_bounds! {
[impl<D: Dialect> SqlStore<D>] {
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
    pub(super) async fn commit(mut tx: Transaction<'static, D::Db>, counts: Counts) -> StoreResult<()> {
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

    /// Applies the writes by the module's rules (see also
    /// [`crate::store::Store::write`]).
    pub(super) async fn write_batch(&self, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
        if let [write] = writes {
            return Ok(vec![self.write_alone(write).await?]);
        }
        let mut tx = Self::begin(&self.writer, None).await?;
        let mut counts = Counts::default();
        let mut outcomes: Vec<Option<Outcome>> = writes.iter().map(|_| None).collect();
        let order = lock_order(writes);
        let applied: StoreResult<()> = async {
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
        let mut tx = Self::begin(&self.writer, None).await?;
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

    pub(super) async fn purge_expired_keys(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<usize> {
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

    pub(super) async fn forget_processed(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<usize> {
        let forgotten: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM processed_messages WHERE message_id IN \
             (SELECT message_id FROM processed_messages WHERE processed_at < $1 \
              ORDER BY processed_at LIMIT $2) \
             RETURNING message_id",
        )
        .bind(D::time(&before))
        .bind(i64::from(limit))
        .fetch_all(&mut *Self::acquire(&self.writer).await?)
        .await
        .map_err(|e| D::classify(e, "failed to prune processed messages"))?;
        Ok(forgotten.len())
    }

    pub(super) async fn store_or_read_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        let mut conn = Self::acquire(&self.writer).await?;
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.to_owned())
        .bind(fresh.to_owned())
        .execute(&mut *conn)
        .await
        .map_err(|e| D::classify(e, "failed to store a shared secret"))?;
        sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name.to_owned())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| D::classify(e, "failed to read a shared secret"))
    }
}
}
