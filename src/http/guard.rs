//! Client guards: what the edge enforces per client, and the layers that
//! do it.
//!
//! - [`ratelimit`](super::ratelimit): a token bucket per client on the API
//!   (off by default), answered 429 with `Retry-After` and `RateLimit-*`;
//! - [`idempotency`](super::idempotency): `Idempotency-Key` on the POSTs
//!   that create, replayed from the database;
//! - [`headers`](super::headers): security headers on every response, and
//!   CORS by origin list (off by default).
//!
//! A client is its credential when it sends one (`X-API-Key`, or the token
//! of `Authorization: Bearer`), known only by a hash: the edge checks no
//! credential, it only tells clients apart. Without one, a client is its
//! address.

use std::sync::Arc;

use axum::Router;
use axum::middleware;

use super::idempotency::{self, Idempotency};
use super::ratelimit::{self, RateLimit};
use super::{AppState, headers};
use crate::config::GuardConfig;
use crate::store::Store;

/// The guards' state, shared by every request.
pub struct Guards {
    /// `None`: no rate limit.
    pub(super) rate_limit: Option<Arc<RateLimit>>,
    pub(super) idempotency: Idempotency,
    /// `None`: CORS is off.
    pub(super) cors: Option<Arc<headers::Cors>>,
}

impl Guards {
    pub fn new(config: &GuardConfig, store: Arc<dyn Store>) -> Self {
        Self {
            rate_limit: config
                .rate_limit
                .map(|limit| Arc::new(RateLimit::new(limit, config.trusted_proxy_hops))),
            idempotency: Idempotency::new(store, config.idempotency_key_ttl),
            cors: headers::cors(&config.cors_allowed_origins).map(Arc::new),
        }
    }

    /// Deletes expired idempotency keys until `token` is cancelled.
    pub async fn run_purge_until_stopped(
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
pub(super) fn limit_rate(api: Router<AppState>, state: &AppState) -> Router<AppState> {
    match &state.guards.rate_limit {
        Some(limit) => api.layer(middleware::from_fn_with_state(
            Arc::clone(limit),
            ratelimit::limit_rate,
        )),
        None => api,
    }
}

/// `router` with CORS for the allowed origins (if any), and security
/// headers on every response (preflights included).
pub(super) fn secure_responses(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let router = match &state.guards.cors {
        Some(cors) => router.layer(middleware::from_fn_with_state(
            Arc::clone(cors),
            headers::apply_cors,
        )),
        None => router,
    };
    router.layer(middleware::from_fn(headers::add_security_headers))
}

/// The paths whose POST takes an `Idempotency-Key`.
const IDEMPOTENT_POSTS: [&str; 2] = ["/api/v1/users", "/api/v1/events"];

/// The paths outside the rate limit.
const UNLIMITED: [&str; 4] = ["/health", "/health/live", "/health/ready", "/metrics"];

/// Adds what the guards answer to the OpenAPI document: 429 on every
/// rate-limited operation, the `Idempotency-Key` header and its answers on
/// the POSTs that create.
pub struct GuardDocs;

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
                    .for_each(ratelimit::document);
            }
        }
    }
}
