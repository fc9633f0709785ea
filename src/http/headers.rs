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

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;

use super::idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use super::ratelimit::{LIMIT, REMAINING, RESET};

/// The page `/docs` serves.
const DOCS_PAGE: &str = include_str!("docs.html");
const DOCS_PATH: &str = "/docs";

/// What every response but `/docs` may load or be embedded in: nothing.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Adds the security headers to the response.
pub(super) async fn add_security_headers(req: Request, next: Next) -> Response {
    let policy = if req.uri().path() == DOCS_PATH {
        docs_policy().clone()
    } else {
        HeaderValue::from_static(API_POLICY)
    };
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(policy);
    response
}

/// The Content-Security-Policy of `/docs`: its own inline script and
/// style, allowed by hash (so that an injected one is not), and requests
/// to this origin only (it fetches `/openapi.json`). A page that loads its
/// assets from this origin instead would need `script-src 'self';
/// style-src 'self'` here.
pub(super) fn docs_policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        let policy = format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hashes(DOCS_PAGE, "script"),
            inline_hashes(DOCS_PAGE, "style"),
        );
        HeaderValue::try_from(policy).expect("BUG: a policy is visible ASCII")
    })
}

/// CSP sources (`'sha256-…'`) for the contents of each inline `<tag>`
/// element of `html`; `'none'` when there is none.
fn inline_hashes(html: &str, tag: &str) -> String {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut sources = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        // `<scripts…` or `<styled…` is another element.
        if !after.starts_with(['>', ' ', '\t', '\n']) {
            rest = after;
            continue;
        }
        let Some(body_start) = after.find('>') else {
            break;
        };
        let body = &after[body_start + 1..];
        let Some(end) = body.find(&close) else {
            break;
        };
        let digest = Sha256::digest(body[..end].as_bytes());
        sources.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end + close.len()..];
    }
    if sources.is_empty() {
        "'none'".to_owned()
    } else {
        sources.join(" ")
    }
}

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

/// Runs requests from allowed origins through CORS; others pass untouched.
pub(super) async fn apply_cors(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = match (&state.guards.cors, req.headers().get(header::ORIGIN)) {
        (Some(cors), Some(origin)) if cors.allows(origin) => cors,
        _ => return next.run(req).await,
    };
    let Ok(response) = allowed.layer.clone().layer(next).oneshot(req).await;
    response
}

/// CORS for `origins` (`*`: any); `None` when the list is empty.
pub(super) fn cors(origins: &[String]) -> Option<Cors> {
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
    let layer = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            api_key,
            IDEMPOTENCY_KEY,
            request_id.clone(),
        ])
        .expose_headers([
            request_id,
            header::RETRY_AFTER,
            LIMIT,
            REMAINING,
            RESET,
            IDEMPOTENT_REPLAYED,
        ])
        .max_age(PREFLIGHT_MAX_AGE);
    Some(Cors { origins, layer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_elements_are_hashed_in_order() {
        let html = "<style>a{}</style><scripts></scripts><script>1</script>\
                    <script type=\"module\">2</script>";
        let hash = |s: &str| {
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s))
            )
        };
        assert_eq!(inline_hashes(html, "style"), hash("a{}"));
        assert_eq!(
            inline_hashes(html, "script"),
            format!("{} {}", hash("1"), hash("2"))
        );
        assert_eq!(inline_hashes("<p>no code</p>", "script"), "'none'");
    }

    #[test]
    fn the_docs_policy_allows_the_docs_page_and_nothing_else() {
        let policy = docs_policy().to_str().unwrap();
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
    }
}
