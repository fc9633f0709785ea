//! What each SQL backend must answer for the shared SQL store: its types
//! and names, how it sorts errors, and the outbox claims whose SQL differs.
//! The answers live with each backend (`store/postgres.rs`,
//! `store/sqlite.rs`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::error::DatabaseError;
use sqlx::{Database, Encode, Pool, Type};
use uuid::Uuid;

use crate::store::migrate::Embedded;
use crate::store::{OutboxRow, StoreError};

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
    /// Begins a read of several statements that must see one snapshot (a
    /// list page and its total). PostgreSQL's default, READ COMMITTED,
    /// gives each statement its own; SQLite's read transaction already
    /// holds one.
    const BEGIN_SNAPSHOT: &'static str;
    /// Runs before the migrations: makes room for them in a database the
    /// Go service created (empty where there is nothing to do).
    const BEFORE_MIGRATIONS: &'static str;
    /// Whether a deleted user's events are removed after the user, in
    /// short transactions, rather than with it (see [`crate::store::purge`]):
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

    /// Partitions `events` by time unless it is already (PostgreSQL, once
    /// a retention is set); whether it did.
    async fn partition_events(_pool: &Pool<Self::Db>) -> Result<bool, sqlx::Error> {
        Ok(false)
    }
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
