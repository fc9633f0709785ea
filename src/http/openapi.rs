//! The OpenAPI 3.1 document, generated from the handlers' annotations so it
//! cannot drift from the code (a test checks real responses against it),
//! and a page that renders it.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;

use super::{AppState, error, events, health, users};
use crate::domain::{Activity, Event, User};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "highload",
        description = "Users and their events. Every change is also published as a message \
                       `{id, user_id, type, data, timestamp}` on the bus (Kafka topic `KAFKA_TOPIC`), \
                       keyed by user id; the workers derive each user's activity from them.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        users::create, users::list, users::read, users::update, users::remove, users::activity,
        events::create, events::list, events::read,
        health::health, health::live, health::ready,
        super::render_metrics, openapi_json, docs,
    ),
    components(schemas(User, Event, Activity, error::Problem)),
    tags(
        (name = "users", description = "Users, and what the workers derived from their events"),
        (name = "events", description = "Events about users"),
        (name = "health", description = "Liveness, readiness and dependencies"),
        (name = "operations", description = "Metrics and this documentation"),
    )
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
}

/// The document, serialized once.
fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("BUG: the OpenAPI document serializes")
    })
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi", summary = "This OpenAPI document",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
pub(super) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[utoipa::path(
    get, path = "/docs", tag = "operations", operation_id = "docs", summary = "This document, rendered",
    responses((status = 200, description = "A page rendering this document", content_type = "text/html", body = String))
)]
pub(super) async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
