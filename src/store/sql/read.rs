//! Reads: single rows, pages of the lists, activity and recorded
//! responses. Reads go to the reader pool where there is one (SQLite's
//! read-only pool), else to the writer's; a page and its total are read in
//! one transaction, so that they agree.

use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrate;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::SqlStore;
use super::dialect::Dialect;
use crate::domain::{Activity, Event, EventFilter, Key, Page, PageOf, User};
use crate::store::counts::{CountKey, events_total, users_total};
use crate::store::rows::{event_columns, event_from_row, user_columns, user_from_row};
use crate::store::{StoreResult, StoredResponse};

impl<D: Dialect> SqlStore<D> {
    /// The statement listing users: binds the seek's key if `seek`, then
    /// `LIMIT` and `OFFSET`.
    pub(super) fn list_users_sql(seek: bool) -> String {
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
    pub(super) fn list_events_sql(filter: &EventFilter, seek: bool) -> String {
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
    pub(super) fn visible_events() -> Option<&'static str> {
        D::DEFERRED_EVENT_DELETES.then_some("user_id NOT IN (SELECT user_id FROM deleted_users)")
    }
}

with_driver_bounds! {
[impl<D: Dialect> SqlStore<D>] {
    /// A page of a list: `select` (see [`list_sql`]; its binds done but
    /// `LIMIT` and `OFFSET`) reads the rows, and the total is the row of
    /// `row_counts` at `total`; in one transaction, so that they agree. One
    /// row more than the page is read: whether it exists says whether a
    /// next page does.
    async fn page_of<'q, T: Send + Unpin>(
        &self,
        total: CountKey,
        select: impl Fn() -> Query<'q, D::Db, <D::Db as Database>::Arguments<'q>>,
        page: Page,
        map: fn(&<D::Db as Database>::Row) -> Result<T, sqlx::Error>,
        key: fn(&T) -> Key,
    ) -> StoreResult<PageOf<T>> {
        let (scope, user_id, kind) = total;
        replicated!(self, |_| false, |pool| async {
            let mut tx = Self::begin(pool, Some(D::BEGIN_SNAPSHOT)).await?;
            let total: Option<(i64,)> = sqlx::query_as(
                "SELECT n FROM row_counts WHERE scope = $1 AND user_id = $2 AND type = $3",
            )
            .bind(scope.to_owned())
            .bind(user_id)
            .bind(kind.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| D::classify(e, "failed to read a total"))?;
            let mut items = select()
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
        })
    }

    pub(super) async fn find_user(&self, id: Uuid) -> StoreResult<Option<User>> {
        replicated!(self, Option::is_none, |pool| async {
            let mut conn = Self::acquire(pool).await?;
            sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
                .bind(id)
                .try_map(|row| user_from_row(&row))
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to read the user"))
        })
    }

    pub(super) async fn user_page(&self, page: Page) -> StoreResult<PageOf<User>> {
        let select = Self::list_users_sql(page.after().is_some());
        let query = || {
            let query = sqlx::query(&select);
            match page.after() {
                Some(after) => query.bind(D::time(&after.created_at)).bind(after.id),
                None => query,
            }
        };
        self.page_of(users_total(), query, page, |row| user_from_row(row), |user: &User| Key {
            created_at: user.created_at,
            id: user.id,
        })
        .await
    }

    pub(super) async fn find_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        let mut select = concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1").to_owned();
        if let Some(visible) = Self::visible_events() {
            select = format!("{select} AND {visible}");
        }
        replicated!(self, Option::is_none, |pool| async {
            let mut conn = Self::acquire(pool).await?;
            sqlx::query(&select)
                .bind(id)
                .try_map(|row| event_from_row(&row))
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| D::classify(e, "failed to read the event"))
        })
    }

    pub(super) async fn event_page(&self, filter: &EventFilter, page: Page) -> StoreResult<PageOf<Event>> {
        if filter.user_id == Some(Uuid::nil()) {
            // No user has the nil id, which keys the totals of all users.
            return Ok(PageOf {
                items: Vec::new(),
                total: 0,
                next: None,
            });
        }
        let select = Self::list_events_sql(filter, page.after().is_some());
        let query = || {
            let query = bind_event_filter(sqlx::query(&select), filter);
            match page.after() {
                Some(after) => query.bind(D::time(&after.created_at)).bind(after.id),
                None => query,
            }
        };
        let total = events_total(filter.user_id, filter.event_type.as_ref().map(|t| t.as_str()));
        self.page_of(total, query, page, |row| event_from_row(row), |event: &Event| Key {
            created_at: event.created_at,
            id: event.id,
        })
        .await
    }

    /// One statement, so that the summary and the per-type counts come from
    /// one snapshot: under PostgreSQL's READ COMMITTED each statement of a
    /// transaction sees its own, and two of them could pair a total from
    /// before a message with a type count from after it.
    pub(super) async fn find_activity(&self, user_id: Uuid) -> StoreResult<Activity> {
        /// The summary, and one type's count (none for a user whose
        /// activity has no types yet).
        type Row = (i64, DateTime<Utc>, Option<String>, Option<i64>);
        let rows: Vec<Row> = replicated!(self, |_| false, |pool| async {
                sqlx::query_as(
                    "SELECT a.total_events, a.last_event_at, t.type, t.count \
                     FROM user_activity a \
                     LEFT JOIN user_activity_types t ON t.user_id = a.user_id \
                     WHERE a.user_id = $1",
                )
                .bind(user_id)
                .fetch_all(&mut *Self::acquire(pool).await?)
                .await
                .map_err(|e| D::classify(e, "failed to read the activity"))
            })?;
        let summary = rows.first().map(|(total, at, _, _)| (*total, *at));
        let by_type = rows
            .into_iter()
            .filter_map(|(_, _, kind, count)| Some((kind?, count?)))
            .collect();
        Ok(crate::store::activity_from(user_id, summary, by_type))
    }

    pub(super) async fn find_stored_response(
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
pub(super) fn bind_event_filter<'q, DB: Database>(
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
