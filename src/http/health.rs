//! Health endpoints.
//!
//! - `/health/live`: the process answers; checks nothing external, so a
//!   slow database never gets the pod restarted.
//! - `/health/ready`: whether to send traffic here: not shutting down and
//!   the database reachable and migrated (without it no request can be
//!   served). The cache and the bus may be down: requests are then served
//!   from the store and messages wait in the outbox.
//! - `/health`: every dependency, each by name with its backend, latency
//!   and the age of its check; 503 `"unhealthy"` when any configured one is
//!   down.
//!
//! What they report is found in [`crate::health`], from the checks made in
//! the background; this module only renders it as JSON. These routes are
//! outside the load shedding of the API (see [`super::app`]): a probe is
//! answered however busy the API is.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::health::DependencyCheck;

/// The state of one dependency.
#[derive(Serialize, ToSchema)]
pub(crate) struct Check {
    status: Status,
    /// `sqlite`/`postgres`, `memory`/`redis`, `memory`/`kafka`.
    #[schema(example = "postgres")]
    backend: &'static str,
    /// How long the check took.
    latency_ms: f64,
    /// Unix time of the check, in seconds. Checks run in the background
    /// every `HEALTH_CHECK_INTERVAL`; this is the latest.
    checked_at: i64,
    /// How long ago the check was made, in milliseconds.
    age_ms: f64,
    /// Why it failed: a generic reason (`unavailable`, or the time limit
    /// it overran), or the whole error with `HEALTH_DETAIL=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "unavailable")]
    error: Option<String>,
}

#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Healthy,
    Unhealthy,
}

/// `GET /health`: every dependency by name.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthReport {
    status: Status,
    /// Unix time of this report, in seconds.
    timestamp: i64,
    checks: Checks,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Checks {
    database: Check,
    cache: Check,
    producer: Check,
    consumer: Check,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Liveness {
    Alive,
}

/// `GET /health/live`.
#[derive(Serialize, ToSchema)]
pub(crate) struct LiveReport {
    status: Liveness,
    timestamp: i64,
}

#[derive(Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Readiness {
    Ready,
    NotReady,
}

/// `GET /health/ready`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadyReport {
    status: Readiness,
    timestamp: i64,
    /// Why not ready, when it is not the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "shutting down")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<ReadyChecks>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReadyChecks {
    database: Check,
}

impl Status {
    fn of(healthy: bool) -> Self {
        if healthy {
            Self::Healthy
        } else {
            Self::Unhealthy
        }
    }
}

impl Readiness {
    fn of(ready: bool) -> Self {
        if ready { Self::Ready } else { Self::NotReady }
    }
}

impl Check {
    fn healthy(&self) -> bool {
        self.status == Status::Healthy
    }
}

impl From<DependencyCheck> for Check {
    fn from(check: DependencyCheck) -> Self {
        Self {
            status: Status::of(check.is_healthy()),
            backend: check.backend,
            latency_ms: check.latency.as_secs_f64() * 1e3,
            checked_at: check.checked_at.timestamp(),
            age_ms: check.age().as_secs_f64() * 1e3,
            error: check.error,
        }
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A health response: 503 (with `Retry-After`) unless `ok`.
fn respond(ok: bool, body: impl Serialize) -> Response {
    if ok {
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}

#[utoipa::path(
    get, path = "/health", tag = "health", operation_id = "health", summary = "Check every dependency",
    responses(
        (status = 200, description = "Every dependency is up", body = HealthReport),
        (status = 503, description = "A dependency is down (see its `error`)", body = HealthReport),
    )
)]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    let dependencies = state.health.dependencies().await;
    let healthy = dependencies.are_healthy();
    respond(
        healthy,
        HealthReport {
            status: Status::of(healthy),
            timestamp: unix_now(),
            checks: Checks {
                database: dependencies.database.into(),
                cache: dependencies.cache.into(),
                producer: dependencies.producer.into(),
                consumer: dependencies.consumer.into(),
            },
        },
    )
}

#[utoipa::path(
    get, path = "/health/live", tag = "health", operation_id = "liveness", summary = "Check that the process answers",
    responses((status = 200, description = "The process answers", body = LiveReport))
)]
pub(super) async fn live() -> Response {
    respond(
        true,
        LiveReport {
            status: Liveness::Alive,
            timestamp: unix_now(),
        },
    )
}

#[utoipa::path(
    get, path = "/health/ready", tag = "health", operation_id = "readiness", summary = "Check whether to send traffic here",
    responses(
        (status = 200, description = "Send traffic here", body = ReadyReport),
        (status = 503, description = "Starting, shutting down, or no database", body = ReadyReport),
    )
)]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let health = &state.health;
    if health.readiness().is_shutting_down() {
        return respond(
            false,
            ReadyReport {
                status: Readiness::NotReady,
                timestamp: unix_now(),
                reason: Some("shutting down"),
                checks: None,
            },
        );
    }
    let database = Check::from(health.dependencies().await.database);
    let ready = database.healthy();
    respond(
        ready,
        ReadyReport {
            status: Readiness::of(ready),
            timestamp: unix_now(),
            reason: None,
            checks: Some(ReadyChecks { database }),
        },
    )
}
