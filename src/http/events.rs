//! `/api/v1/events`: create, read, and list (filtered by user and type).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::documented::{BadRequest, NotFound, NotJson, TooLarge, Unavailable};
use super::extract::{ApiJson, ApiQuery, EventId};
use super::{ApiError, AppState, PageQuery, json_body};
use crate::domain::{Event, EventData, EventFilter, EventType, NewEvent, ValidationError};
use crate::edge::idempotency::Idempotent;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/events", get(list).post(create))
        .route("/api/v1/events/{id}", get(read))
}

/// A new event about a user.
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateEvent {
    /// An existing user's id.
    #[schema(format = Uuid)]
    user_id: String,
    /// 1–100 characters of `[A-Za-z0-9_.:-]`.
    #[serde(rename = "type")]
    #[schema(
        example = "login",
        pattern = "^[A-Za-z0-9_.:-]{1,100}$",
        min_length = 1,
        max_length = 100
    )]
    event_type: String,
    /// Any string up to 64 KiB (UTF-8) without the NUL character (U+0000).
    #[schema(example = "{\"ip\":\"10.0.0.1\"}", pattern = "^[^\\u0000]*$")]
    data: String,
}

#[derive(Deserialize)]
pub(super) struct ListEvents {
    #[serde(flatten)]
    page: PageQuery,
    user_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

/// One page of events, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct EventList<'a> {
    events: &'a [Event],
    /// Events in all pages (with the same filters).
    total: u64,
    /// The page number asked for; 1 for a page that started at a cursor.
    page: u32,
    limit: u32,
    /// Pass as `cursor` (with the same filters) to get the page after this
    /// one; `null` on the last page.
    #[schema(example = "0100063f6e9c5b2a8c0197a1c3e27a7c3a9b8d1e2f3a4b5c6d7e8f90a1b2c3d4e5")]
    next_cursor: Option<String>,
}

/// The name cursors of the event list with `filter` are bound to: a cursor
/// of one filter is refused with another.
fn events_list(filter: &EventFilter) -> String {
    format!(
        "events user_id={} type={}",
        filter.user_id.map(|id| id.to_string()).unwrap_or_default(),
        filter.event_type.as_ref().map_or("", |t| t.as_str())
    )
}

fn parse_user_id(raw: &str) -> Result<Uuid, ValidationError> {
    Uuid::parse_str(raw.trim()).map_err(|_| ValidationError::new("user_id", "must be a UUID"))
}

#[utoipa::path(
    post, path = "/api/v1/events", tag = "events", operation_id = "create_event", summary = "Post an event about a user",
    request_body(content = CreateEvent, content_type = "application/json"),
    responses(
        (status = 201, description = "The created event; its message is on the bus soon after", body = Event),
        BadRequest,
        NotFound,
        TooLarge,
        NotJson,
        Unavailable,
    )
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Idempotent(key): Idempotent,
    ApiJson(body): ApiJson<CreateEvent>,
) -> Result<Response, ApiError> {
    let new = NewEvent {
        user_id: parse_user_id(&body.user_id)?,
        event_type: EventType::parse("type", &body.event_type)?,
        data: EventData::parse("data", body.data)?,
    };
    let json = state.service.create_event(new, key).await?;
    Ok(json_body(StatusCode::CREATED, json))
}

#[utoipa::path(
    get, path = "/api/v1/events/{id}", tag = "events", operation_id = "get_event", summary = "Get an event",
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event", body = Event),
        BadRequest,
        NotFound,
        Unavailable,
    )
)]
pub(super) async fn read(
    State(state): State<AppState>,
    EventId(id): EventId,
) -> Result<Response, ApiError> {
    let json = state.service.get_event(id).await?;
    Ok(json_body(StatusCode::OK, json))
}

#[utoipa::path(
    get, path = "/api/v1/events", tag = "events", operation_id = "list_events", summary = "List events, newest first",
    params(
        ("page" = Option<u32>, Query, minimum = 1, maximum = 2147483647, description = "Page number (default 1); not with `cursor`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Events per page (default 10)"),
        ("user_id" = Option<uuid::Uuid>, Query, description = "Only this user's events"),
        ("type" = Option<String>, Query, pattern = "^[A-Za-z0-9_.:-]{1,100}$", min_length = 1, max_length = 100, description = "Only events of this type: 1–100 characters of `[A-Za-z0-9_.:-]`"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9a-f]{66}$", description = "Start after the page that returned this `next_cursor`, with the same filters (a keyset seek: deep pages cost what the first does, and events posted meanwhile are neither repeated nor skipped among older ones). Opaque; a changed cursor, one from other filters, or one combined with `page`, is a 400"),
    ),
    responses(
        (status = 200, description = "One page of events, newest first", body = EventList),
        BadRequest,
        Unavailable,
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListEvents>,
) -> Result<Response, ApiError> {
    let filter = EventFilter {
        user_id: query
            .user_id
            .as_deref()
            .map(parse_user_id)
            .transpose()
            .map_err(ApiError::InvalidQuery)?,
        event_type: query
            .event_type
            .as_deref()
            .map(|t| EventType::parse("type", t))
            .transpose()
            .map_err(ApiError::InvalidQuery)?,
    };
    let list = events_list(&filter);
    let key = state.service.cursor_key().await?;
    let page = query.page.page(&list, key)?;
    // The rows' room before they are read: a page of large events is
    // megabytes, and many at once must not pass the write buffer.
    let most = usize::try_from(page.limit).unwrap_or(usize::MAX) * Event::MAX_HELD_BYTES;
    let rows_room = state
        .write_buffer
        .hold(most as u64)
        .await
        .ok_or(ApiError::Overloaded)?;
    let events = state.service.list_events(&filter, page).await?;
    let events_total = events.total;
    let next_cursor = events.next.map(|next| next.to_cursor(&list, key));
    super::page::respond(
        &state.write_buffer,
        rows_room,
        events.items,
        Event::held_bytes,
        |events| {
            serde_json::to_vec(&EventList {
                events,
                total: events_total,
                page: page.number(),
                limit: page.limit,
                next_cursor: next_cursor.clone(),
            })
        },
    )
    .await
}
