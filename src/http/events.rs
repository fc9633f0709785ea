//! `/api/v1/events`: create, read, and list (filtered by user and type).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiJson, ApiQuery, parse_id};
use super::{ApiError, AppState, PageQuery, json_body};
use crate::domain::{Event, EventData, EventFilter, EventType, NewEvent, ValidationError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/events", get(list).post(create))
        .route("/api/v1/events/{id}", get(read))
}

#[derive(Deserialize)]
struct CreateEvent {
    user_id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: String,
}

#[derive(Deserialize)]
struct ListEvents {
    #[serde(flatten)]
    page: PageQuery,
    user_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

#[derive(Serialize)]
struct EventList<'a> {
    events: &'a [Event],
    total: u64,
    page: u32,
    limit: u32,
}

fn parse_user_id(raw: &str) -> Result<Uuid, ValidationError> {
    Uuid::parse_str(raw.trim()).map_err(|_| ValidationError::new("user_id", "must be a UUID"))
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateEvent>,
) -> Result<Response, ApiError> {
    let new = NewEvent {
        user_id: parse_user_id(&body.user_id)?,
        event_type: EventType::parse("type", &body.event_type)?,
        data: EventData::parse("data", body.data)?,
    };
    let json = state.service.create_event(new).await?;
    Ok(json_body(StatusCode::CREATED, json))
}

async fn read(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let json = state.service.get_event(parse_id(&id, "event")?).await?;
    Ok(json_body(StatusCode::OK, json))
}

async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListEvents>,
) -> Result<Response, ApiError> {
    let page = query.page.page()?;
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
    let events = state.service.list_events(&filter, page).await?;
    Ok(axum::Json(EventList {
        events: &events.items,
        total: events.total,
        page: page.page,
        limit: page.limit,
    })
    .into_response())
}
