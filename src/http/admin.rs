//! The Go service's admin views, where their meaning fits: what the guards
//! refused lately (shed, rate limited, authentication refused, forbidden,
//! bad input), by reason and by client. Admin scope only, and only with an
//! `AUTH_MODE` (without one anybody would be admin, and the views name
//! client addresses). `/admin/security/alerts`, `/threats` and `/health`
//! have no counterpart here and answer 404.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::edge::refusals::{Refusal, Summary};

/// The window the views cover.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Refusals `/admin/security/events` lists.
const EVENTS: usize = 100;

/// `/admin/ddos-stats`, in the Go service's envelope.
#[derive(Serialize, ToSchema)]
pub(super) struct DdosStats {
    ddos_protection: Summary,
    /// Unix seconds.
    timestamp: i64,
}

/// The latest refusals, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct SecurityEvents {
    #[schema(value_type = Vec<Object>)]
    events: Vec<Refusal>,
}

#[utoipa::path(
    get, path = "/admin/ddos-stats", tag = "admin", operation_id = "ddos_stats",
    summary = "What the guards refused in the last 15 minutes (admin)",
    responses(
        (status = 200, description = "Refusals by reason and by client", body = DdosStats),
        (status = 404, description = "AUTH_MODE is none", body = super::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ("api_key" = ["admin"]))
)]
pub(super) async fn ddos_stats(State(state): State<AppState>) -> Response {
    Json(DdosStats {
        ddos_protection: state.guards.refusals.summary(WINDOW),
        timestamp: chrono::Utc::now().timestamp(),
    })
    .into_response()
}

#[utoipa::path(
    get, path = "/admin/security/stats", tag = "admin", operation_id = "security_stats",
    summary = "Refusals in the last 15 minutes by reason and client (admin)",
    responses(
        (status = 200, description = "Refusals by reason and by client", body = Summary),
        (status = 404, description = "AUTH_MODE is none", body = super::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ("api_key" = ["admin"]))
)]
pub(super) async fn security_stats(State(state): State<AppState>) -> Response {
    Json(state.guards.refusals.summary(WINDOW)).into_response()
}

#[utoipa::path(
    get, path = "/admin/security/events", tag = "admin", operation_id = "security_events",
    summary = "The latest 100 refusals of the last 15 minutes (admin)",
    responses(
        (status = 200, description = "Each refusal: time, reason, status, client, method, route", body = SecurityEvents),
        (status = 404, description = "AUTH_MODE is none", body = super::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ("api_key" = ["admin"]))
)]
pub(super) async fn security_events(State(state): State<AppState>) -> Response {
    Json(SecurityEvents {
        events: state.guards.refusals.latest(WINDOW, EVENTS),
    })
    .into_response()
}
