//! The OpenAPI 3.1 document, generated from the handlers' annotations so it
//! cannot drift from the code (a test checks real responses against it),
//! and Swagger UI rendering it at `/docs`, with its assets embedded in the
//! binary: the page loads nothing from anywhere but this service.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;

use super::{AppState, accounts, admin, error, events, health, users};
use crate::auth::openapi::SecurityAddon;
use crate::domain::{Activity, Event, User};
use crate::edge::GuardDocs;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "highload",
        description = "Users and their events. Every change is also published as a message \
                       `{id, user_id, type, data, timestamp}` on the bus (Kafka topic `KAFKA_TOPIC`), \
                       keyed by user id; the workers derive each user's activity from them. \
                       Lists run newest first and page by number (`page`, `limit`) or by keyset \
                       cursor (`cursor`: the previous page's `next_cursor`, with `limit`); a \
                       cursor's page costs the same however deep it is.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        users::create, users::list, users::read, users::update, users::remove, users::activity,
        events::create, events::list, events::read,
        accounts::login, accounts::refresh, accounts::logout, accounts::profile,
        accounts::create_api_key,
        admin::ddos_stats, admin::security_stats, admin::security_events,
        health::health, health::live, health::ready,
        super::render_metrics, openapi_json, docs,
    ),
    components(schemas(User, Event, Activity, error::Problem)),
    modifiers(&GuardDocs, &SecurityAddon),
    tags(
        (name = "users", description = "Users, and what the workers derived from their events"),
        (name = "events", description = "Events about users"),
        (name = "auth", description = "Accounts and their tokens (AUTH_MODE=accounts), and API keys"),
        (name = "admin", description = "What the guards refused lately (admin scope, with an AUTH_MODE)"),
        (name = "health", description = "Liveness, readiness and dependencies"),
        (name = "operations", description = "Metrics and this documentation"),
    )
)]
pub(crate) struct ApiDoc;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        .route("/docs/{*file}", get(docs_file))
}

/// The document, serialized once.
pub(crate) fn document() -> &'static str {
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
    responses((status = 200, description = "Swagger UI rendering this document", content_type = "text/html", body = String))
)]
pub(super) async fn docs() -> Response {
    swagger_file("index.html")
}

/// Swagger UI's assets, under `/docs/`.
async fn docs_file(Path(file): Path<String>) -> Response {
    swagger_file(&file)
}

/// Where Swagger UI is mounted. Its page refers to its assets by relative
/// paths; `/docs` has no trailing slash (the router trims them), so the page
/// names its base.
const DOCS_BASE: &str = "/docs/";

fn swagger_file(file: &str) -> Response {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        Arc::new(
            utoipa_swagger_ui::Config::from("/openapi.json")
                // Swagger UI would otherwise send the document to an online
                // validator.
                .validator_url("none")
                .display_operation_id(true),
        )
    });
    match utoipa_swagger_ui::serve(file, config.clone()) {
        Ok(Some(found)) => {
            let content_type = HeaderValue::from_str(&found.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let body = if file == "index.html" {
                let page = String::from_utf8_lossy(&found.bytes).replacen(
                    "<head>",
                    &format!("<head>\n<base href=\"{DOCS_BASE}\">"),
                    1,
                );
                page.into_bytes()
            } else {
                found.bytes.into_owned()
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(None) => super::ApiError::RouteNotFound.into_response(),
        Err(err) => super::ApiError::Internal(anyhow::anyhow!("rendering Swagger UI: {err}"))
            .into_response(),
    }
}
