//! Response headers that protect browsers, on every response, and CORS.
//!
//! Always: `X-Content-Type-Options: nosniff` (a JSON body is never run as
//! a script or a page), `X-Frame-Options: DENY` and CSP `frame-ancestors
//! 'none'` (no page is framed), `Referrer-Policy: no-referrer`, and
//! `Cache-Control: no-store` unless a handler chose otherwise (answers hold
//! personal data and change with every write). The JSON API gets a policy
//! that allows nothing at all; `/docs` gets [`docs_policy`], the one place
//! that says what that page may load.
//!
//! CORS is off unless `CORS_ALLOWED_ORIGINS` lists origins: then a
//! preflight from a listed origin is answered (200) with what it may send,
//! and every answer to that origin says so; requests from other origins
//! pass as if CORS were off (no CORS header; a preflight is a 405), so
//! their browsers refuse the response.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use super::rate_limit::{LIMIT, REMAINING, RESET};
use crate::config::{CorsSettings, SecurityHeaders};

/// Swagger UI: the page and its assets.
const DOCS_PATH: &str = "/docs";

/// What every response but `/docs` may load or be embedded in: nothing.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Adds the security headers to the response.
pub(super) async fn add_security_headers(
    State(values): State<Arc<SecurityHeaderValues>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let policy = if path == DOCS_PATH || path.starts_with("/docs/") {
        HeaderValue::from_static(DOCS_POLICY)
    } else {
        values.api_policy.clone()
    };
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    if values.nosniff {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if values.frame_deny {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    headers.insert(header::REFERRER_POLICY, values.referrer_policy.clone());
    if let Some(permissions) = &values.permissions_policy {
        headers.insert(PERMISSIONS_POLICY, permissions.clone());
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(policy);
    response
}

const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");

/// The security headers, as settings made them, ready to insert.
pub(crate) struct SecurityHeaderValues {
    api_policy: HeaderValue,
    referrer_policy: HeaderValue,
    frame_deny: bool,
    nosniff: bool,
    permissions_policy: Option<HeaderValue>,
}

impl SecurityHeaderValues {
    pub(crate) fn new(settings: &SecurityHeaders) -> Self {
        let value = |raw: &str| {
            HeaderValue::from_str(raw).expect("BUG: header values are checked at start")
        };
        Self {
            api_policy: settings
                .api_policy
                .as_deref()
                .map_or(HeaderValue::from_static(API_POLICY), value),
            referrer_policy: value(&settings.referrer_policy),
            frame_deny: settings.frame_deny,
            nosniff: settings.nosniff,
            permissions_policy: settings.permissions_policy.as_deref().map(value),
        }
    }
}

/// The Content-Security-Policy of `/docs` (Swagger UI, whose page has no
/// inline script): its scripts, stylesheets and images from this origin
/// only, and requests to this origin only (it fetches `/openapi.json`).
/// Its stylesheet draws icons from `data:` URLs, and the page sets styles
/// on elements as it renders, hence those two allowances; no inline
/// script runs.
pub(super) const DOCS_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'self'; form-action 'none'; frame-ancestors 'none'";

/// CORS for a list of origins.
#[derive(Clone)]
pub(super) struct Cors {
    /// The origins allowed; `None`: any.
    origins: Option<Vec<HeaderValue>>,
    /// Answers preflights and adds the headers, for allowed origins only
    /// (it would add some of them for any origin).
    layer: CorsLayer,
}

impl Cors {
    fn allows(&self, origin: &HeaderValue) -> bool {
        self.origins
            .as_ref()
            .is_none_or(|origins| origins.contains(origin))
    }
}

/// Runs requests from allowed origins through CORS; others pass untouched
/// (the layer is there only when origins are configured).
pub(super) async fn apply_cors(
    State(cors): State<Arc<Cors>>,
    req: Request,
    next: Next,
) -> Response {
    if !req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|origin| cors.allows(origin))
    {
        return next.run(req).await;
    }
    let Ok(response) = cors.layer.clone().layer(next).oneshot(req).await;
    response
}

/// CORS for `origins` (`*`: any); `None` when the list is empty.
pub(super) fn cors(origins: &[String], settings: &CorsSettings) -> Option<Cors> {
    if origins.is_empty() {
        return None;
    }
    let (allow_origin, origins) = if origins.iter().any(|o| o == "*") {
        (AllowOrigin::any(), None)
    } else {
        let origins: Vec<HeaderValue> = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin)
                    .expect("BUG: CORS_ALLOWED_ORIGINS is checked at start")
            })
            .collect();
        (AllowOrigin::list(origins.clone()), Some(origins))
    };
    let api_key = HeaderName::from_static("x-api-key");
    let request_id = HeaderName::from_static("x-request-id");
    let methods: Vec<Method> = if settings.methods.is_empty() {
        vec![Method::GET, Method::POST, Method::PUT, Method::DELETE]
    } else {
        settings
            .methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).expect("BUG: methods are checked at start"))
            .collect()
    };
    let name = |raw: &String| {
        HeaderName::from_bytes(raw.as_bytes()).expect("BUG: header names are checked at start")
    };
    let mut allowed = vec![
        header::CONTENT_TYPE,
        header::AUTHORIZATION,
        api_key,
        IDEMPOTENCY_KEY,
        request_id.clone(),
    ];
    allowed.extend(settings.headers.iter().map(name));
    let mut exposed = vec![
        request_id,
        header::RETRY_AFTER,
        LIMIT,
        REMAINING,
        RESET,
        IDEMPOTENT_REPLAYED,
    ];
    exposed.extend(settings.exposed_headers.iter().map(name));
    let layer = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods(methods)
        .allow_headers(allowed)
        .expose_headers(exposed)
        .allow_credentials(settings.allow_credentials)
        .max_age(settings.max_age.unwrap_or(PREFLIGHT_MAX_AGE));
    Some(Cors { origins, layer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_policy_runs_no_inline_script_and_reaches_only_this_origin() {
        assert!(DOCS_POLICY.starts_with("default-src 'none';"));
        assert!(DOCS_POLICY.contains("script-src 'self';"));
        assert!(DOCS_POLICY.contains("connect-src 'self';"));
        assert!(!DOCS_POLICY.contains("http"));
        HeaderValue::from_static(DOCS_POLICY);
    }
}
