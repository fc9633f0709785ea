//! Row → domain record mapping shared by the SQL stores (both select the
//! same column names).

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::OutboxRow;
use crate::domain::{Event, User};
use crate::telemetry::trace_context::TraceContext;

/// The columns of a user row, for every statement that returns one.
macro_rules! user_columns {
    () => {
        "id, email, first_name, last_name, created_at, updated_at"
    };
}

/// The columns of an event row.
macro_rules! event_columns {
    () => {
        "id, user_id, type, data, created_at"
    };
}

pub(crate) use {event_columns, user_columns};

pub(crate) fn user_from_row<'r, R>(row: &'r R) -> Result<User, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    Uuid: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn event_from_row<'r, R>(row: &'r R) -> Result<Event, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    Uuid: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Event {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        event_type: row.try_get("type")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn outbox_row_from_row<'r, R>(row: &'r R) -> Result<OutboxRow, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(OutboxRow {
        id: row.try_get("id")?,
        key: row.try_get("key")?,
        payload: row.try_get("payload")?,
        trace: trace_context(row.try_get("traceparent")?, row.try_get("tracestate")?),
    })
}

/// The trace context stored with an outbox row; none for rows stored
/// outside a trace (or before the columns existed).
fn trace_context(traceparent: Option<String>, tracestate: Option<String>) -> Option<TraceContext> {
    TraceContext::parse(&traceparent?, tracestate.as_deref())
}
