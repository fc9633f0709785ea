//! SQLite store: the embedded default, one file under `./data/`.
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
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::rows::{event_columns, event_from_row, user_columns, user_from_row};
use super::{
    OutboxBacklog, OutboxRow, PoolStats, Store, StoreError, StoreResult, Waiting, migrate,
};
use crate::domain::{Activity, Event, EventFilter, EventMessage, Page, PageOf, User, UserPatch};

/// How long a statement waits for another process's write lock (for example
/// a backup tool) before giving up with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    /// The single write connection; see the module comment.
    writer: SqlitePool,
    /// Read-only connections for GETs and lists.
    reader: SqlitePool,
    writer_waiting: Waiting,
    reader_waiting: Waiting,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory.
    pub async fn open(
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
            .connect_with(options.clone().create_if_missing(true))
            .await
            .with_context(|| format!("failed to open SQLite database {}", path.display()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("failed to open SQLite database {}", path.display()))?;
        Ok(Self {
            writer,
            reader,
            writer_waiting: Waiting::default(),
            reader_waiting: Waiting::default(),
        })
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer_waiting
            .on(self.writer.begin())
            .await
            .map_err(|e| classify(e, "failed to begin a transaction"))
    }

    async fn begin_read(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.reader_waiting
            .on(self.reader.begin())
            .await
            .map_err(|e| classify(e, "failed to begin a read"))
    }

    async fn write_connection(&self) -> StoreResult<PoolConnection<Sqlite>> {
        self.writer_waiting
            .on(self.writer.acquire())
            .await
            .map_err(|e| classify(e, "failed to get the write connection"))
    }

    async fn read_connection(&self) -> StoreResult<PoolConnection<Sqlite>> {
        self.reader_waiting
            .on(self.reader.acquire())
            .await
            .map_err(|e| classify(e, "failed to get a read connection"))
    }
}

/// The one text format of timestamps in this database: fixed width, so that
/// comparing text compares time.
fn ts(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Sorts SQLite errors: constraint violations the API answers with a 4xx,
/// lock contention as `Unavailable` (retry later), the rest as `Other`.
fn classify(err: sqlx::Error, context: &'static str) -> StoreError {
    if let Some(db) = err.as_database_error() {
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation if db.message().contains("users.email") => {
                return StoreError::EmailTaken;
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => return StoreError::UserNotFound,
            _ => {}
        }
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        let primary = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        if matches!(primary, Some(5 | 6)) {
            return StoreError::Unavailable(err);
        }
    }
    StoreError::from_sqlx(err, context)
}

async fn insert_outbox(
    tx: &mut Transaction<'static, Sqlite>,
    message: &EventMessage,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO outbox (message_id, key, payload, created_at) VALUES (?, ?, ?, ?)")
        .bind(message.id)
        .bind(message.key())
        .bind(message.to_json())
        .bind(ts(&message.timestamp))
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "failed to write the outbox row"))?;
    Ok(())
}

async fn commit(tx: Transaction<'static, Sqlite>) -> StoreResult<()> {
    tx.commit()
        .await
        .map_err(|e| classify(e, "failed to commit"))
}

/// Appends ` WHERE … AND …` for the filter's present fields.
fn push_event_filter(query: &mut QueryBuilder<'_, Sqlite>, filter: &EventFilter) {
    let mut separator = " WHERE ";
    if let Some(user_id) = filter.user_id {
        query.push(separator).push("user_id = ").push_bind(user_id);
        separator = " AND ";
    }
    if let Some(event_type) = &filter.event_type {
        query
            .push(separator)
            .push("type = ")
            .push_bind(event_type.as_str().to_owned());
    }
}

/// `(?, ?, …)` of the ids, for `IN`.
fn push_id_list(query: &mut QueryBuilder<'_, Sqlite>, ids: &[i64]) {
    query.push("(");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    list.push_unseparated(")");
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            super::pool_stats("writer", &self.writer, &self.writer_waiting),
            super::pool_stats("reader", &self.reader, &self.reader_waiting),
        ]
    }

    async fn migrate(&self) -> StoreResult<()> {
        migrate::migrator(migrate::SQLITE)
            .await
            .context("failed to load SQLite migrations")?
            .run(&self.writer)
            .await
            .context("failed to run SQLite migrations")?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.read_connection().await?)
            .await
            .map_err(|e| classify(e, "failed to ping"))?;
        Ok(())
    }

    async fn create_user(&self, user: &User, message: &EventMessage) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, email, first_name, last_name, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(user.id)
        .bind(&user.email)
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(ts(&user.created_at))
        .bind(ts(&user.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to insert the user"))?;
        insert_outbox(&mut tx, message).await?;
        commit(tx).await
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>> {
        sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = ?"
        ))
        .bind(id)
        .try_map(|row: SqliteRow| user_from_row(&row))
        .fetch_optional(&mut *self.read_connection().await?)
        .await
        .map_err(|e| classify(e, "failed to read the user"))
    }

    async fn update_user(
        &self,
        id: Uuid,
        patch: &UserPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(concat!(
            "UPDATE users SET email = COALESCE(?, email), first_name = COALESCE(?, first_name), \
             last_name = COALESCE(?, last_name), updated_at = ? WHERE id = ? RETURNING ",
            user_columns!()
        ))
        .bind(patch.email.as_ref().map(|e| e.as_str()))
        .bind(patch.first_name.as_ref().map(|n| n.as_str()))
        .bind(patch.last_name.as_ref().map(|n| n.as_str()))
        .bind(ts(&now))
        .bind(id)
        .try_map(|row: SqliteRow| user_from_row(&row))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to update the user"))?;
        let Some(user) = updated else {
            return Ok(None);
        };
        insert_outbox(
            &mut tx,
            &EventMessage::for_user(EventMessage::USER_UPDATED, &user, now),
        )
        .await?;
        commit(tx).await?;
        Ok(Some(user))
    }

    async fn delete_user(
        &self,
        id: Uuid,
        message: &EventMessage,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let mut tx = self.begin_write().await?;
        // Events first: the cascade would delete them without telling us
        // their ids. Without the user the transaction rolls back.
        let event_ids = sqlx::query_scalar("DELETE FROM events WHERE user_id = ? RETURNING id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to delete the user's events"))?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to delete the user"))?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        insert_outbox(&mut tx, message).await?;
        commit(tx).await?;
        Ok(Some(event_ids))
    }

    async fn list_users(&self, page: Page) -> StoreResult<PageOf<User>> {
        let mut tx = self.begin_read().await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to count users"))?;
        let items = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        ))
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .try_map(|row: SqliteRow| user_from_row(&row))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to list users"))?;
        Ok(PageOf {
            items,
            total: total.try_into().unwrap_or_default(),
        })
    }

    async fn create_event(&self, event: &Event, message: &EventMessage) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO events (id, user_id, type, data, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(event.id)
        .bind(event.user_id)
        .bind(&event.event_type)
        .bind(&event.data)
        .bind(ts(&event.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to insert the event"))?;
        insert_outbox(&mut tx, message).await?;
        commit(tx).await
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id = ?"
        ))
        .bind(id)
        .try_map(|row: SqliteRow| event_from_row(&row))
        .fetch_optional(&mut *self.read_connection().await?)
        .await
        .map_err(|e| classify(e, "failed to read the event"))
    }

    async fn list_events(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>> {
        let mut tx = self.begin_read().await?;
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM events");
        push_event_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to count events"))?;
        let mut select = QueryBuilder::new(concat!("SELECT ", event_columns!(), " FROM events"));
        push_event_filter(&mut select, filter);
        select
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(page.offset());
        let items = select
            .build()
            .try_map(|row: SqliteRow| event_from_row(&row))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to list events"))?;
        Ok(PageOf {
            items,
            total: total.try_into().unwrap_or_default(),
        })
    }

    async fn claim_outbox(&self, limit: u32, lease: Duration) -> StoreResult<Vec<OutboxRow>> {
        let now = Utc::now();
        let until = now + lease;
        let mut rows = sqlx::query(
            "UPDATE outbox SET locked_until = ?, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM outbox WHERE locked_until IS NULL OR locked_until < ? \
              ORDER BY id LIMIT ?) \
             RETURNING id, key, payload",
        )
        .bind(ts(&until))
        .bind(ts(&now))
        .bind(i64::from(limit))
        .try_map(|row: SqliteRow| {
            Ok(OutboxRow {
                id: row.try_get("id")?,
                key: row.try_get("key")?,
                payload: row.try_get("payload")?,
            })
        })
        .fetch_all(&mut *self.write_connection().await?)
        .await
        .map_err(|e| classify(e, "failed to claim outbox rows"))?;
        // RETURNING gives no order guarantee; publishing follows the outbox.
        rows.sort_unstable_by_key(|r| r.id);
        Ok(rows)
    }

    async fn complete_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::new("DELETE FROM outbox WHERE id IN ");
        push_id_list(&mut query, ids);
        query
            .build()
            .execute(&mut *self.write_connection().await?)
            .await
            .map_err(|e| classify(e, "failed to delete published outbox rows"))?;
        Ok(())
    }

    async fn release_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::new("UPDATE outbox SET locked_until = NULL WHERE id IN ");
        push_id_list(&mut query, ids);
        query
            .build()
            .execute(&mut *self.write_connection().await?)
            .await
            .map_err(|e| classify(e, "failed to release outbox rows"))?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let (rows, oldest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox")
                .fetch_one(&mut *self.read_connection().await?)
                .await
                .map_err(|e| classify(e, "failed to measure the outbox"))?;
        Ok(OutboxBacklog {
            rows: rows.try_into().unwrap_or_default(),
            oldest,
        })
    }

    async fn apply_message(&self, message: &EventMessage) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let fresh = sqlx::query(
            "INSERT INTO processed_messages (message_id, processed_at) VALUES (?, ?) \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(message.id)
        .bind(ts(&Utc::now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to record the message"))?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO user_activity (user_id, total_events, last_event_at) VALUES (?, 1, ?) \
             ON CONFLICT (user_id) DO UPDATE SET total_events = total_events + 1, \
             last_event_at = MAX(last_event_at, excluded.last_event_at)",
        )
        .bind(message.user_id)
        .bind(ts(&message.timestamp))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to update the activity"))?;
        sqlx::query(
            "INSERT INTO user_activity_types (user_id, type, count) VALUES (?, ?, 1) \
             ON CONFLICT (user_id, type) DO UPDATE SET count = count + 1",
        )
        .bind(message.user_id)
        .bind(&message.event_type)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to update the activity"))?;
        commit(tx).await?;
        Ok(true)
    }

    async fn get_activity(&self, user_id: Uuid) -> StoreResult<Activity> {
        let mut tx = self.begin_read().await?;
        let summary: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT total_events, last_event_at FROM user_activity WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to read the activity"))?;
        let by_type: Vec<(String, i64)> =
            sqlx::query_as("SELECT type, count FROM user_activity_types WHERE user_id = ?")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| classify(e, "failed to read the activity"))?;
        Ok(super::activity_from(user_id, summary, by_type))
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
