//! The guards in front of the API: what stands between a client and the
//! routes of [`crate::http`].
//!
//! - [`server`]: the listener and its connections ([`connection`]: how long
//!   each may stay open), plain or over TLS ([`https`]);
//! - [`body`]: request bodies received in full, within a deadline,
//!   before admission;
//! - [`admission`]: an adaptive concurrency limit per class of request,
//!   beyond which requests wait briefly, then get 503;
//! - [`unsent`]: a bound on the bytes of responses not yet taken by their
//!   clients (503 beyond it);
//! - [`authenticate`]: credentials and scopes, by `AUTH_MODE`;
//! - [`rate_limit`]: a token bucket per client on the API (off by
//!   default), answered 429 with `Retry-After` and `RateLimit-*`;
//! - [`idempotency`]: `Idempotency-Key` on the POSTs that create, replayed
//!   from the database;
//! - [`headers`]: security headers on every response, and CORS by origin
//!   list (off by default).
//!
//! [`crate::http::app`] puts them in their order around the routes. They
//! answer refusals with the API's one error type (`http::error::ApiError`)
//! and import nothing else of it.
//!
//! A client is its credential once that verified (`X-API-Key`, or the
//! token of `Authorization: Bearer`), known only by a hash; before, and
//! without one, a client is its address.

use std::sync::Arc;

use axum::Router;
use axum::middleware;

pub(crate) mod admission;
pub(crate) mod authenticate;
pub(crate) mod body;
mod connection;
pub(crate) mod headers;
mod https;
pub(crate) mod idempotency;
pub(crate) mod own_writes;
pub(crate) mod rate_limit;
pub(crate) mod refusals;
pub(crate) mod server;
pub(crate) mod unsent;

use crate::auth::VerifiedCredentials;
use crate::config::{GuardConfig, RateLimitConfig};
use crate::store::Store;
use idempotency::Idempotency;
use rate_limit::RateLimit;

/// The guards' state, shared by every request.
pub(crate) struct Guards {
    /// `None`: no rate limit.
    rate_limit: Option<Arc<RateLimit>>,
    pub(crate) idempotency: Idempotency,
    /// `None`: CORS is off.
    cors: Option<Arc<headers::Cors>>,
    /// Proxies in front whose `X-Forwarded-For` entries are believed.
    trusted_proxy_hops: u32,
    /// `None`: no limit of its own on `/api/v1/auth/*`.
    auth_rate_limit: Option<Arc<RateLimit>>,
    security_headers: Arc<headers::SecurityHeaderValues>,
    /// What the guards refused lately (the admin views).
    pub(crate) refusals: refusals::Refusals,
    /// `None`: no read replica, every read sees every write.
    pub(crate) own_writes: Option<own_writes::OwnWrites>,
}

impl Guards {
    /// `verified`: the credentials that verified lately (the rate limits
    /// count by them); `replica_max_lag`: `DB_READ_MAX_LAG`, with a read
    /// replica.
    pub(crate) fn new(
        config: &GuardConfig,
        store: Arc<dyn Store>,
        verified: &VerifiedCredentials,
        replica_max_lag: Option<std::time::Duration>,
    ) -> Self {
        let limit = |limit: RateLimitConfig| {
            Arc::new(RateLimit::new(
                limit,
                config.trusted_proxy_hops,
                verified.clone(),
            ))
        };
        Self {
            rate_limit: config.rate_limit.map(limit),
            idempotency: Idempotency::new(store, config.idempotency_key_ttl),
            cors: headers::cors(&config.cors_allowed_origins, &config.cors).map(Arc::new),
            trusted_proxy_hops: config.trusted_proxy_hops,
            auth_rate_limit: config.auth_rate_limit.map(limit),
            security_headers: Arc::new(headers::SecurityHeaderValues::new(
                &config.security_headers,
            )),
            refusals: refusals::Refusals::default(),
            own_writes: replica_max_lag.map(own_writes::OwnWrites::new),
        }
    }

    /// The client's address: the peer's, or the one the farthest trusted
    /// proxy saw (`TRUSTED_PROXY_HOPS`), as the rate limit counts clients.
    pub(crate) fn client_address(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Option<std::net::IpAddr> {
        rate_limit::forwarded_for(headers, self.trusted_proxy_hops).or(peer)
    }

    /// Deletes expired idempotency keys until `token` is cancelled.
    pub(crate) async fn run_purge_until_stopped(
        self: Arc<Self>,
        token: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        self.idempotency.run_purge_until_stopped(token).await
    }
}

/// `api` with the per-client rate limit, if one is set: outside the
/// admission layers, so that a client over its limit costs nothing more.
/// (Each layer is a boxed service cloned for every request: a guard that
/// is off is left out, not passed through.)
pub(crate) fn limit_rate<S: Clone + Send + Sync + 'static>(
    api: Router<S>,
    guards: &Guards,
) -> Router<S> {
    match &guards.rate_limit {
        Some(limit) => api.layer(middleware::from_fn_with_state(
            Arc::clone(limit),
            rate_limit::limit_rate,
        )),
        None => api,
    }
}

/// `sessions` (login, refresh) with a rate limit of their own, if one is
/// set (the Go service's `RATE_LIMIT_AUTH_*`), inside the API's.
pub(crate) fn limit_auth_rate<S: Clone + Send + Sync + 'static>(
    sessions: Router<S>,
    guards: &Guards,
) -> Router<S> {
    match &guards.auth_rate_limit {
        Some(limit) => sessions.layer(middleware::from_fn_with_state(
            Arc::clone(limit),
            rate_limit::limit_rate,
        )),
        None => sessions,
    }
}

/// `router` with CORS for the allowed origins (if any), and security
/// headers on every response (preflights included).
pub(crate) fn secure_responses<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    guards: &Guards,
) -> Router<S> {
    let router = match &guards.cors {
        Some(cors) => router.layer(middleware::from_fn_with_state(
            Arc::clone(cors),
            headers::apply_cors,
        )),
        None => router,
    };
    router.layer(middleware::from_fn_with_state(
        Arc::clone(&guards.security_headers),
        headers::add_security_headers,
    ))
}

/// What an API request passes before its handler, and its response after,
/// in one layer (a layer costs every request a boxed service and future):
/// its body received in full ([`body`]), admission in its class
/// ([`admission`]), then room for a large response ([`unsent`]).
pub(crate) struct Gate {
    pub(crate) body: body::BodyLimits,
    pub(crate) admission: admission::Admission,
    pub(crate) write_buffer: unsent::WriteBuffer,
}

/// Middleware of the API routes: see [`Gate`]. Refusals are 408 or 413 for
/// the body, 503 `overloaded` with `Retry-After` for admission and room.
pub(crate) async fn pass_gate(
    axum::extract::State(gate): axum::extract::State<Arc<Gate>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let req = match body::receive(&gate.body, req).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let class = admission::Class::of(req.method());
    let Ok(permit) = gate.admission.admit(class).await else {
        return crate::http::error::ApiError::Overloaded.into_response();
    };
    let response = next.run(req).await;
    let response = unsent::reserve_room(&gate.write_buffer, response).await;
    permit.complete(response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE);
    response
}

/// The paths whose POST takes an `Idempotency-Key`.
const IDEMPOTENT_POSTS: [&str; 2] = ["/api/v1/users", "/api/v1/events"];

/// The paths outside the rate limit.
const UNLIMITED: [&str; 4] = ["/health", "/health/live", "/health/ready", "/metrics"];

/// Adds what the guards answer to the OpenAPI document: 429 on every
/// rate-limited operation, the `Idempotency-Key` header and its answers on
/// the POSTs that create.
pub(crate) struct GuardDocs;

impl utoipa::Modify for GuardDocs {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let creates = IDEMPOTENT_POSTS.contains(&path.as_str());
            if let Some(post) = item.post.as_mut().filter(|_| creates) {
                idempotency::document(post);
            }
            if !UNLIMITED.contains(&path.as_str()) {
                let operations = [
                    &mut item.get,
                    &mut item.put,
                    &mut item.post,
                    &mut item.delete,
                    &mut item.patch,
                ];
                operations
                    .into_iter()
                    .flatten()
                    .for_each(rate_limit::document);
            }
        }
    }
}
