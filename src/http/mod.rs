//! The API: routes, handlers, extractors, the mapping of errors to
//! responses, and [`app`], which puts the guards of [`crate::edge`] around
//! them in order.
//!
//! Middleware, outermost first: trailing-slash normalization (wraps the
//! whole router, so `/api/v1/users/` is routed like `/api/v1/users`), request
//! id (accepted from `X-Request-ID` when it is 1 to 128 visible ASCII
//! characters, else generated, and returned), one log line per request (at
//! `debug`: under overload a line per request would cost more than the
//! request; errors are logged where they happen, shed requests in summary),
//! panic → 500, metrics; then, for the API only, the body received in full
//! (`body`: 408 when it comes too slowly, 413 when too large), admission control
//! (`admission`: an adaptive concurrency limit per class, reads and
//! writes, beyond which requests wait briefly, then get 503), room for the
//! response among those not yet taken by their clients (`unsent`), request
//! timeout → 503, body size limit → 413. The client guards (`guard`) add
//! security headers and CORS around everything, a per-client rate limit
//! (429) around the API, and `Idempotency-Key` handling inside its
//! admission layers.
//!
//! The operations routes (`/health`, `/health/live`, `/health/ready`,
//! `/metrics`) are a route tree of their own, outside admission and the
//! timeout, with a budget of their own ([`OPERATIONS_MAX_IN_FLIGHT`], beyond
//! which they wait, never 503): they answer from memory, so they cost
//! little, and a probe that failed because the API is busy would get a
//! healthy instance restarted or taken out of its load balancer in the
//! middle of a load spike.

mod accounts;
mod admin;
mod debug;
pub(crate) mod error;
mod events;
mod extract;
pub(crate) mod health;
pub(crate) mod openapi;
mod page;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use tower::Layer;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::Span;

pub(crate) use error::ApiError;

use crate::config::AdmissionConfig;
use crate::edge::admission::{Admission, AdmissionSettings};
use crate::edge::body::BodyLimits;
use crate::edge::refusals::{Reason, Refusal};
use crate::edge::unsent::WriteBuffer;
use crate::edge::{Gate, Guards, authenticate, idempotency};

use crate::domain::{CursorKey, Page};
use crate::health::Health;
use crate::metrics::{Metrics, RequestLabels, RouteLabels, StoreCollector};
use crate::service::Service;
use prometheus_client::metrics::gauge::Gauge;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Operations requests (health, metrics) handled at once; more wait. Their
/// own budget: the API's load never sheds them, and a flood of scrapes
/// cannot take the whole process.
pub(crate) const OPERATIONS_MAX_IN_FLIGHT: usize = 64;

/// The longest `X-Request-ID` accepted from a client, in bytes.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Shared by every handler and middleware: a handle on [`AppParts`].
///
/// axum clones the state for every middleware a request passes and for its
/// handler; a handle costs one reference count per clone, where the parts
/// themselves would cost one per field, each a contended atomic on a busy
/// server.
#[derive(Clone)]
pub(crate) struct AppState(Arc<AppParts>);

/// What the handlers share.
pub(crate) struct AppParts {
    pub service: Arc<Service>,
    pub health: Arc<Health>,
    /// Largest accepted request body, in bytes (for the 413 message).
    pub body_limit: usize,
    pub metrics: Arc<Metrics>,
    /// Samples the store's pools and outbox backlog for `/metrics`.
    pub store_metrics: Arc<StoreCollector>,
    /// Rate limits, idempotency keys, CORS.
    pub guards: Arc<Guards>,
    /// Checks credentials (`AUTH_MODE`, `METRICS_TOKEN`).
    pub auth: Arc<crate::auth::Authenticator>,
    /// Logins and their tokens (`AUTH_MODE=accounts`).
    pub accounts: Option<Arc<crate::auth::accounts::Accounts>>,
    /// Where `POST /api/v1/api-keys` stores keys.
    pub keys: crate::auth::api_key::KeyStore,
    /// Whether `/debug/*` serves profiles (`PROFILING`).
    pub profiling: bool,
    /// The room of responses on their way out (`HTTP_WRITE_BUFFER_LIMIT`).
    pub write_buffer: WriteBuffer,
}

impl AppState {
    pub(crate) fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// Limits of the HTTP edge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub body_limit: usize,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub admission: AdmissionConfig,
}

/// `page`, `limit` and `cursor` of the list endpoints, validated by
/// [`Page::parse`].
#[derive(Deserialize)]
pub(crate) struct PageQuery {
    page: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for in the list named `list` (see
    /// [`crate::domain::Key::to_cursor`]).
    pub(crate) fn page(&self, list: &str, key: &CursorKey) -> Result<Page, ApiError> {
        Page::parse(
            self.page.as_deref(),
            self.limit.as_deref(),
            self.cursor.as_deref(),
            list,
            key,
        )
        .map_err(ApiError::InvalidQuery)
    }
}

/// A response whose body is JSON serialized earlier (by the cache or the
/// service).
pub(crate) fn json_body(status: StatusCode, json: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// The whole application, ready for `axum::serve`.
pub(crate) fn app(state: AppState, limits: HttpLimits) -> NormalizePath<Router> {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            let request_id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let span = tracing::info_span!(
                "request",
                method = %req.method(),
                route,
                path = req.uri().path(),
                request_id,
            );
            // The caller's trace (W3C `traceparent`) continues here.
            crate::telemetry::trace_context::continue_from_headers(&span, req.headers());
            span
        })
        .on_request(())
        .on_response(
            |res: &axum::http::Response<_>, latency: Duration, _span: &Span| {
                tracing::debug!(
                    status = res.status().as_u16(),
                    latency_ms = latency.as_secs_f64() * 1e3,
                    "request completed"
                );
            },
        )
        .on_failure(());
    // Every route: request id, log line, panic → 500, metrics.
    let observe = ServiceBuilder::new()
        .map_request(drop_unusable_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ));
    // The API only: admission, time limit, body limit.
    let budgets = Admission::new(
        AdmissionSettings {
            target_latency: limits.admission.admission_target_latency,
            queue_timeout: limits.admission.admission_queue_timeout,
            max_in_flight: limits.max_in_flight,
        },
        Arc::clone(&state.metrics),
    );
    let gate = Gate {
        body: BodyLimits {
            max_bytes: limits.body_limit,
            read_timeout: limits.body_read_timeout,
        },
        admission: budgets,
        write_buffer: state.write_buffer.clone(),
    };
    let shed = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(
            Arc::new(gate),
            crate::edge::pass_gate,
        ))
        .layer(HandleErrorLayer::new(|err: tower::BoxError| async move {
            if err.is::<tower::timeout::error::Elapsed>() {
                ApiError::Timeout
            } else {
                ApiError::Internal(anyhow::anyhow!(err))
            }
        }))
        .layer(TimeoutLayer::new(limits.request_timeout))
        .layer(DefaultBodyLimit::max(limits.body_limit));
    // Inside the admission layers: an idempotency key's lookup is database work.
    let resources =
        users::router()
            .merge(events::router())
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                gate_resources,
            ));
    // Authentication: the resources by AUTH_MODE and scope, /metrics by
    // METRICS_TOKEN; health, /docs and /openapi.json stay open. Outside the
    // idempotency keys, which are kept per credential.
    let resources = if state.auth.mode() == crate::auth::AuthMode::None {
        resources
    } else {
        resources
            .route("/api/v1/api-keys", post(accounts::create_api_key))
            .route("/admin/ddos-stats", get(admin::ddos_stats))
            .route("/admin/security/stats", get(admin::security_stats))
            .route("/admin/security/events", get(admin::security_events))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&state.auth),
                authenticate::require_scope,
            ))
    };
    // Logging in needs no credential; one's own profile and logout need
    // one, whatever its scopes.
    let own = Router::new()
        .route("/api/v1/auth/logout", post(accounts::logout))
        .route("/api/v1/auth/profile", get(accounts::profile))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.auth),
            authenticate::require_principal,
        ));
    let sessions = crate::edge::limit_auth_rate(
        Router::new()
            .route("/api/v1/auth/login", post(accounts::login))
            .route("/api/v1/auth/refresh", post(accounts::refresh)),
        &state.guards,
    );
    let resources = if state.accounts.is_some() {
        resources.merge(sessions).merge(own)
    } else {
        resources
    };
    let metrics = Router::new()
        .route("/metrics", axum::routing::get(render_metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.auth),
            authenticate::require_metrics_token,
        ));
    let api = Router::new()
        .merge(openapi::router())
        .merge(resources)
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(shed);
    // Profiles: off unless PROFILING, for the admin scope (PROFILING needs
    // an AUTH_MODE); outside the API's time limit, which a profile's
    // seconds may pass.
    let debug = if state.profiling {
        Router::new()
            .route("/debug/pprof/profile", get(debug::cpu_profile))
            .route("/debug/allocator", get(debug::allocator))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&state.auth),
                authenticate::require_scope,
            ))
    } else {
        Router::new()
    };
    let operations = health::router()
        .merge(metrics)
        .merge(debug)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(GlobalConcurrencyLimitLayer::new(OPERATIONS_MAX_IN_FLIGHT));
    // Client guards (see `guard`): the per-client rate limit on the API,
    // inside the log and metrics; security headers and CORS on every route.
    let api = crate::edge::limit_rate(api, &state.guards);
    let router = crate::edge::secure_responses(operations.merge(api).layer(observe), &state.guards);
    let router = router.with_state(state);
    NormalizePathLayer::trim_trailing_slash().layer(router)
}

/// Removes an `X-Request-ID` that is empty, longer than
/// [`MAX_REQUEST_ID_LEN`] or not visible ASCII (`!` to `~`), so that a
/// generated one takes its place: the id is echoed and logged, and a client
/// must make neither unbounded nor unreadable.
fn drop_unusable_request_id(mut req: Request) -> Request {
    let usable = |id: &HeaderValue| {
        let id = id.as_bytes();
        !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(u8::is_ascii_graphic)
    };
    if !req.headers().get_all(&REQUEST_ID).iter().all(usable) {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

/// Makes the `X-Request-ID` of requests that came without a usable one:
/// UUIDs (version 4 in form), unique within the process by a counter and
/// across processes by a random base drawn at start. `Uuid::new_v4` would
/// cost a system call for random bytes on every request; these ids only
/// identify, they are not secrets.
#[derive(Clone)]
struct RequestIds {
    base: u128,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            base: uuid::Uuid::new_v4().as_u128(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next_id(&self) -> uuid::Uuid {
        // The counter stays within the low 62 bits, which the version and
        // variant bits leave alone, so no two ids of a process are equal.
        let count = self.next.fetch_add(1, Ordering::Relaxed) & ((1 << 62) - 1);
        uuid::Builder::from_random_bytes((self.base ^ u128::from(count)).to_be_bytes()).into_uuid()
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let mut text = uuid::Uuid::encode_buffer();
        let id = self.next_id().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

/// The `method` label of a request: the standard methods by name, any
/// other as `OTHER`, so that a client cannot add series by inventing
/// methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// What every resource route checks first, in one layer (a layer costs
/// every request a boxed service and future): 503 until the store is
/// migrated (it may be down at start-up), then the `Idempotency-Key` of a
/// POST that creates (see [`idempotency::check_key`]), and, with a read
/// replica, the caller's own writes (see [`crate::edge::own_writes`]).
async fn gate_resources(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.health.readiness().is_store_ready() {
        return ApiError::NotReady.into_response();
    }
    let Some(own_writes) = &state.guards.own_writes else {
        return idempotency::check_key(&state.guards, state.body_limit, req, next).await;
    };
    let caller = own_writes.caller(&state.guards, &req);
    let method = req.method().clone();
    let answer = idempotency::check_key(&state.guards, state.body_limit, req, next);
    own_writes.around(caller, &method, answer).await
}

/// Counts the request, its latency by route template, and requests in
/// flight. Every label is bounded: a standard method or `OTHER`, a route
/// template or `unmatched`, a status code.
async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    /// Decrements on drop, so that cancelled requests are uncounted too.
    struct InFlight(Gauge);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let metrics = &state.metrics;
    metrics.http_in_flight.inc();
    let _in_flight = InFlight(metrics.http_in_flight.clone());
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let client = state.guards.client_address(req.headers(), peer);
    let response = next.run(req).await;
    if let Some(reason) = response.extensions().get::<Reason>() {
        state.guards.refusals.record(Refusal {
            at: chrono::Utc::now(),
            reason: *reason,
            status: response.status().as_u16(),
            client,
            method: method.to_owned(),
            route: route.clone(),
        });
    }
    metrics
        .http_duration
        .get_or_create(&RouteLabels {
            method,
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`: samples what is measured at scrape time, then renders
/// every metric.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics", summary = "Prometheus metrics",
    responses((status = 200, description = "Every metric, in the Prometheus text format", content_type = "text/plain", body = String))
)]
async fn render_metrics(State(state): State<AppState>) -> Response {
    state.store_metrics.collect(&state.metrics).await;
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_version_4_uuids() {
        let ids = RequestIds::new();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let mut make = ids.clone();
            let id = make
                .make_request_id(&axum::http::Request::new(()))
                .expect("an id");
            let id = uuid::Uuid::parse_str(id.header_value().to_str().unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(seen.insert(id), "{id} made twice");
        }
        // Another process (another base) does not repeat them.
        let other = RequestIds::new();
        assert!(!seen.contains(&other.next_id()));
    }
}
