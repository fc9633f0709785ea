//! PostgreSQL store: the configured backend for production.
//!
//! One pool for everything. The pool connects lazily, so the service starts
//! (and reports itself unready) while PostgreSQL is still coming up; the
//! startup task runs migrations with backoff until it is reachable.
//! Migrations take an advisory lock, so replicas starting together apply
//! each one once.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::rows::{event_columns, event_from_row, user_columns, user_from_row};
use super::{
    OutboxBacklog, OutboxRow, PoolStats, Store, StoreError, StoreResult, Waiting, migrate,
};
use crate::domain::{Activity, Event, EventFilter, EventMessage, Page, PageOf, User, UserPatch};

pub struct PostgresStore {
    pool: PgPool,
    waiting: Waiting,
}

impl PostgresStore {
    /// Creates the pool without connecting.
    pub fn connect_lazy(
        options: PgConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let options = options.application_name("highload");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            // A ping per checkout would cost a round trip per request; a
            // broken connection fails its query instead, is dropped, and the
            // request gets a 503.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(600))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            waiting: Waiting::default(),
        })
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.waiting
            .on(self.pool.begin())
            .await
            .map_err(|e| classify(e, "failed to begin a transaction"))
    }

    async fn connection(&self) -> StoreResult<PoolConnection<Postgres>> {
        self.waiting
            .on(self.pool.acquire())
            .await
            .map_err(|e| classify(e, "failed to get a connection"))
    }
}

/// Sorts PostgreSQL errors: the constraint violations the API answers with
/// a 4xx (by constraint name), transient conditions as `Unavailable`, the
/// rest as `Other`.
fn classify(err: sqlx::Error, context: &'static str) -> StoreError {
    if let Some(db) = err.as_database_error() {
        match db.constraint() {
            Some("users_email_key") => return StoreError::EmailTaken,
            Some("events_user_id_fkey") => return StoreError::UserNotFound,
            _ => {}
        }
        let code = db.code().unwrap_or_default();
        // 08: connection exception, 53: insufficient resources,
        // 57P0x: shutting down / starting up, 40001/40P01: retry the transaction.
        if code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || code == "40001"
            || code == "40P01"
        {
            return StoreError::Unavailable(err);
        }
    }
    StoreError::from_sqlx(err, context)
}

async fn insert_outbox(
    tx: &mut Transaction<'static, Postgres>,
    message: &EventMessage,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox (message_id, key, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(message.id)
    .bind(message.key())
    .bind(message.to_json())
    .bind(message.timestamp)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "failed to write the outbox row"))?;
    Ok(())
}

async fn commit(tx: Transaction<'static, Postgres>) -> StoreResult<()> {
    tx.commit()
        .await
        .map_err(|e| classify(e, "failed to commit"))
}

/// Appends ` WHERE … AND …` for the filter's present fields.
fn push_event_filter(query: &mut QueryBuilder<'_, Postgres>, filter: &EventFilter) {
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

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![super::pool_stats("main", &self.pool, &self.waiting)]
    }

    async fn migrate(&self) -> StoreResult<()> {
        migrate::migrator(migrate::POSTGRES)
            .await
            .context("failed to load PostgreSQL migrations")?
            .run(&self.pool)
            .await
            .map_err(|err| match err {
                sqlx::migrate::MigrateError::Execute(e) => classify(e, "failed to migrate"),
                other => StoreError::Other(
                    anyhow::Error::new(other).context("failed to run PostgreSQL migrations"),
                ),
            })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.connection().await?)
            .await
            .map_err(|e| classify(e, "failed to ping"))?;
        Ok(())
    }

    async fn create_user(&self, user: &User, message: &EventMessage) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, email, first_name, last_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id)
        .bind(&user.email)
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(user.created_at)
        .bind(user.updated_at)
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
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .try_map(|row: PgRow| user_from_row(&row))
        .fetch_optional(&mut *self.connection().await?)
        .await
        .map_err(|e| classify(e, "failed to read the user"))
    }

    async fn update_user(
        &self,
        id: Uuid,
        patch: &UserPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(concat!(
            "UPDATE users SET email = COALESCE($1, email), first_name = COALESCE($2, first_name), \
             last_name = COALESCE($3, last_name), updated_at = $4 WHERE id = $5 RETURNING ",
            user_columns!()
        ))
        .bind(patch.email.as_ref().map(|e| e.as_str()))
        .bind(patch.first_name.as_ref().map(|n| n.as_str()))
        .bind(patch.last_name.as_ref().map(|n| n.as_str()))
        .bind(now)
        .bind(id)
        .try_map(|row: PgRow| user_from_row(&row))
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
        let mut tx = self.begin().await?;
        // Lock the user first, so that no event is added between the two
        // deletes; events before the user, because the cascade would delete
        // them without telling us their ids.
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to lock the user"))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let event_ids = sqlx::query_scalar("DELETE FROM events WHERE user_id = $1 RETURNING id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to delete the user's events"))?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to delete the user"))?;
        insert_outbox(&mut tx, message).await?;
        commit(tx).await?;
        Ok(Some(event_ids))
    }

    async fn list_users(&self, page: Page) -> StoreResult<PageOf<User>> {
        let mut tx = self.begin().await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to count users"))?;
        let items = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .try_map(|row: PgRow| user_from_row(&row))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to list users"))?;
        commit(tx).await?;
        Ok(PageOf {
            items,
            total: total.try_into().unwrap_or_default(),
        })
    }

    async fn create_event(&self, event: &Event, message: &EventMessage) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO events (id, user_id, type, data, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.id)
        .bind(event.user_id)
        .bind(&event.event_type)
        .bind(&event.data)
        .bind(event.created_at)
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
            " FROM events WHERE id = $1"
        ))
        .bind(id)
        .try_map(|row: PgRow| event_from_row(&row))
        .fetch_optional(&mut *self.connection().await?)
        .await
        .map_err(|e| classify(e, "failed to read the event"))
    }

    async fn list_events(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>> {
        let mut tx = self.begin().await?;
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
            .try_map(|row: PgRow| event_from_row(&row))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(e, "failed to list events"))?;
        commit(tx).await?;
        Ok(PageOf {
            items,
            total: total.try_into().unwrap_or_default(),
        })
    }

    async fn claim_outbox(&self, limit: u32, lease: Duration) -> StoreResult<Vec<OutboxRow>> {
        // The database's clock decides leases, so replicas with skewed
        // clocks agree on them.
        let mut rows = sqlx::query(
            "UPDATE outbox SET locked_until = now() + make_interval(secs => $1), \
             attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM outbox WHERE locked_until IS NULL OR locked_until < now() \
              ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id, key, payload",
        )
        .bind(lease.as_secs_f64())
        .bind(i64::from(limit))
        .try_map(|row: PgRow| {
            Ok(OutboxRow {
                id: row.try_get("id")?,
                key: row.try_get("key")?,
                payload: row.try_get("payload")?,
            })
        })
        .fetch_all(&mut *self.connection().await?)
        .await
        .map_err(|e| classify(e, "failed to claim outbox rows"))?;
        rows.sort_unstable_by_key(|r| r.id);
        Ok(rows)
    }

    async fn complete_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *self.connection().await?)
            .await
            .map_err(|e| classify(e, "failed to delete published outbox rows"))?;
        Ok(())
    }

    async fn release_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE outbox SET locked_until = NULL WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *self.connection().await?)
            .await
            .map_err(|e| classify(e, "failed to release outbox rows"))?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let (rows, oldest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox")
                .fetch_one(&mut *self.connection().await?)
                .await
                .map_err(|e| classify(e, "failed to measure the outbox"))?;
        Ok(OutboxBacklog {
            rows: rows.try_into().unwrap_or_default(),
            oldest,
        })
    }

    async fn apply_message(&self, message: &EventMessage) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO processed_messages (message_id) VALUES ($1) \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(message.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to record the message"))?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO user_activity (user_id, total_events, last_event_at) VALUES ($1, 1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET \
             total_events = user_activity.total_events + 1, \
             last_event_at = GREATEST(user_activity.last_event_at, excluded.last_event_at)",
        )
        .bind(message.user_id)
        .bind(message.timestamp)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to update the activity"))?;
        sqlx::query(
            "INSERT INTO user_activity_types (user_id, type, count) VALUES ($1, $2, 1) \
             ON CONFLICT (user_id, type) DO UPDATE SET count = user_activity_types.count + 1",
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
        let mut tx = self.begin().await?;
        let summary: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT total_events, last_event_at FROM user_activity WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| classify(e, "failed to read the activity"))?;
        let by_type: Vec<(String, i64)> =
            sqlx::query_as("SELECT type, count FROM user_activity_types WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| classify(e, "failed to read the activity"))?;
        commit(tx).await?;
        Ok(super::activity_from(user_id, summary, by_type))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
