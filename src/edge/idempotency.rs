//! `Idempotency-Key` on the POSTs that create (users, events): a client
//! that sends a request again with the same key, because it never saw the
//! answer, gets the first answer instead of a second user or event.
//!
//! - The same key with the same request (method, path, body) replays the
//!   first response, status and body, marked `Idempotent-Replayed: true`.
//! - The same key with another request is 422: a key names one request.
//! - The same key while its first request is still in progress is 409, at
//!   once on this replica. On another replica the second request waits for
//!   the first's transaction, changes nothing, and is 409 too; retried, it
//!   gets the replay.
//! - Only successes are recorded: a rejected request (409 email taken, 404
//!   unknown user, …) may be retried with its key and runs again.
//! - Keys last `IDEMPOTENCY_KEY_TTL` (24 h by default); then the key may
//!   name a new request, and a background task deletes it.
//! - Keys are per caller: with authentication on, the verified caller (the
//!   API key's id, the token's subject, so that a refreshed token keeps its
//!   keys); without, the client's address (as the rate limit sees it).
//!   Two callers never see each other's keys.
//!
//! The key is recorded in the database, in the transaction of the effect
//! (see `store::idempotency`), so it holds across replicas and restarts.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type,
};

use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::service::ServiceError;
use crate::store::{IdempotencyKey, Store, StoredResponse};

pub(super) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub(super) const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key accepted, in bytes.
const MAX_KEY_LEN: usize = 255;

/// Keys deleted per statement by the purge.
const PURGE_BATCH: u32 = 1000;

/// The longest pause between purges (shorter when keys live less).
const MAX_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The idempotency keys' state.
pub(crate) struct Idempotency {
    store: Arc<dyn Store>,
    /// How long a key is kept.
    ttl: Duration,
    /// `(scope, key)` of the requests in progress in this process: a
    /// second request with one of them is refused at once rather than
    /// waiting for the first one's transaction.
    in_flight: Mutex<HashSet<(String, String)>>,
}

/// A key in progress; it is free again when this is dropped (the request
/// answered or abandoned).
struct InFlight<'a> {
    keys: &'a Mutex<HashSet<(String, String)>>,
    entry: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.keys).remove(&self.entry);
    }
}

fn lock(
    keys: &Mutex<HashSet<(String, String)>>,
) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
    // The set is consistent after any panic (insert and remove only).
    keys.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Idempotency {
    pub(super) fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            in_flight: Mutex::default(),
        }
    }

    /// Marks the key in progress; `None` if it already is.
    fn begin(&self, scope: &str, key: &str) -> Option<InFlight<'_>> {
        let entry = (scope.to_owned(), key.to_owned());
        lock(&self.in_flight)
            .insert(entry.clone())
            .then(|| InFlight {
                keys: &self.in_flight,
                entry,
            })
    }

    /// Deletes expired keys, every `IDEMPOTENCY_KEY_TTL` or minute, until
    /// `token` is cancelled.
    pub(super) async fn run_purge_until_stopped(
        &self,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let interval = self.ttl.min(MAX_PURGE_INTERVAL);
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = self.purge() => {}
            }
        }
    }

    /// Deletes the keys expired by now, a batch at a time.
    async fn purge(&self) {
        let (purged, failed) = crate::store::delete_in_batches(PURGE_BATCH, |batch| {
            self.store.purge_idempotency_keys(Utc::now(), batch)
        })
        .await;
        if let Some(err) = failed {
            let error = format!("{:#}", anyhow::Error::new(err));
            tracing::warn!(error, "failed to purge expired idempotency keys");
        }
        if purged > 0 {
            tracing::debug!(keys = purged, "purged expired idempotency keys");
        }
    }
}

/// The idempotency key of a request that [`check_key`] let through, for
/// the handler to record with its effect; `None` without a key.
pub(crate) struct Idempotent(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotent {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.extensions.remove::<IdempotencyKey>()))
    }
}

/// Replays, refuses, or lets through (with [`Idempotent`]) a POST with an
/// `Idempotency-Key`; any other request passes untouched.
/// `body_limit` is the API's (for the 413 of a body read here).
pub(crate) async fn check_key(
    guards: &super::Guards,
    body_limit: usize,
    req: Request,
    next: Next,
) -> Response {
    check(guards, body_limit, req, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn check(
    guards: &super::Guards,
    body_limit: usize,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(key) = parse_key(req.headers())? else {
        return Ok(next.run(req).await);
    };
    let idempotency = &guards.idempotency;
    let scope = caller_of(guards, &req);
    let (parts, body) = req.into_parts();
    let body = read_body(Request::from_parts(parts.clone(), body), body_limit).await?;
    let request_hash = request_hash(&parts, &body);

    let _in_flight = idempotency
        .begin(&scope, &key)
        .ok_or(ApiError::IdempotencyKeyInFlight)?;
    let stored = idempotency
        .store
        .idempotent_response(&scope, &key)
        .await
        .map_err(|err| ApiError::from(ServiceError::from(err)))?;
    if let Some(stored) = stored {
        return if stored.request_hash == request_hash {
            Ok(replay(stored))
        } else {
            Err(ApiError::IdempotencyKeyReused)
        };
    }
    let mut req = Request::from_parts(parts, Body::from(body));
    let expires_at = Utc::now()
        + chrono::Duration::from_std(idempotency.ttl)
            .expect("BUG: IDEMPOTENCY_KEY_TTL is checked to be at most a year");
    req.extensions_mut().insert(IdempotencyKey {
        scope,
        key,
        request_hash,
        expires_at,
    });
    Ok(next.run(req).await)
}

/// Whose keys the request's is, hashed (64 hex digits, whatever the
/// subject): its verified principal, else its client address.
fn caller_of(guards: &super::Guards, req: &Request) -> String {
    hex(&Sha256::digest(
        Caller::of(guards, req).to_string().as_bytes(),
    ))
}

/// Who sends a request: its verified principal, else its client address
/// (as [`super::Guards::client_address`] sees it).
#[derive(Debug, Hash)]
pub(crate) enum Caller<'r> {
    Principal(&'static str, &'r str),
    Address(std::net::IpAddr),
    Anonymous,
}

impl<'r> Caller<'r> {
    pub(crate) fn of(guards: &super::Guards, req: &'r Request) -> Self {
        if let Some(principal) = req.extensions().get::<Principal>() {
            return Self::Principal(principal.kind.as_str(), &principal.subject);
        }
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        match guards.client_address(req.headers(), peer) {
            Some(address) => Self::Address(address),
            None => Self::Anonymous,
        }
    }
}

impl std::fmt::Display for Caller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Principal(kind, subject) => write!(f, "{kind}:{subject}"),
            Self::Address(address) => write!(f, "address:{address}"),
            Self::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The `Idempotency-Key`, if the request has one: 1–255 visible ASCII
/// characters (`!` to `~`), optionally in double quotes (a structured
/// field string, as the IETF draft writes it).
fn parse_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let invalid = |detail: &str| ApiError::InvalidHeader {
        header: "Idempotency-Key",
        detail: detail.to_owned(),
    };
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("send one key per request"));
    }
    let raw = value.as_bytes();
    let key = raw
        .strip_prefix(b"\"")
        .and_then(|k| k.strip_suffix(b"\""))
        .unwrap_or(raw);
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(invalid("must be 1 to 255 characters"));
    }
    if !key.iter().all(u8::is_ascii_graphic) {
        return Err(invalid(
            "must be visible ASCII characters (such as a UUID), without spaces",
        ));
    }
    Ok(Some(
        String::from_utf8(key.to_vec()).expect("BUG: ASCII is UTF-8"),
    ))
}

/// The body, within the body limit (413 beyond, as the handlers answer).
async fn read_body(req: Request, body_limit: usize) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &())
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: body_limit },
            _ => ApiError::InvalidBody {
                field: None,
                detail: rejection.body_text(),
            },
        })
}

/// What a key is bound to: the method, the path (and query) and the body.
fn request_hash(parts: &Parts, body: &[u8]) -> String {
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |target| target.as_str());
    let mut hash = Sha256::new();
    for part in [parts.method.as_str().as_bytes(), target.as_bytes()] {
        hash.update(part);
        hash.update([0]);
    }
    hash.update(body);
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The recorded response, again.
fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")),
        ],
        stored.body,
    )
        .into_response()
}

/// Adds the `Idempotency-Key` header and its answers to a POST of the
/// OpenAPI document.
pub(super) fn document(operation: &mut Operation) {
    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the same key with the same request (method, path, body) \
             replays the first successful response instead of creating again; with another \
             request it is 422. Keys last IDEMPOTENCY_KEY_TTL (24 h by default), per client \
             credential. 1–255 visible ASCII characters, such as a UUID.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_KEY_LEN))
                .pattern(Some("^[!-~]+$")),
        ))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(key);
    if let Some(RefOr::T(created)) = operation.responses.responses.get_mut("201") {
        let replayed = HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["true"])),
            )
            .description(Some(
                "Present when this is the replay of an earlier response to the same \
                 Idempotency-Key",
            ))
            .build();
        created
            .headers
            .insert("Idempotent-Replayed".to_owned(), replayed);
    }
    let problem = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build()
    };
    const IN_PROGRESS: &str =
        "A request with the same Idempotency-Key is in progress; retry to receive its response";
    let responses = &mut operation.responses.responses;
    match responses.get_mut("409") {
        Some(RefOr::T(conflict)) => {
            conflict.description = format!("{}; or: {IN_PROGRESS}", conflict.description)
        }
        _ => {
            let in_progress = ResponseBuilder::new()
                .description(IN_PROGRESS)
                .content("application/problem+json", problem())
                .build();
            responses.insert("409".to_owned(), in_progress.into());
        }
    }
    let reused = ResponseBuilder::new()
        .description("The Idempotency-Key was sent before with another request")
        .content("application/problem+json", problem())
        .build();
    responses.insert("422".to_owned(), reused.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &'static str) -> Result<Option<String>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(value));
        parse_key(&headers)
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert_eq!(key("a").unwrap().as_deref(), Some("a"));
        assert_eq!(
            key("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
                .unwrap()
                .as_deref(),
            Some("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        for bad in ["", "\"\"", "two words", "tab\there"] {
            assert!(
                matches!(
                    key(bad),
                    Err(ApiError::InvalidHeader {
                        header: "Idempotency-Key",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let long: &'static str = "k".repeat(256).leak();
        assert!(key(long).is_err());
        assert!(key(&long[1..]).unwrap().is_some());
        assert_eq!(parse_key(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn a_request_hash_binds_method_path_and_body() {
        let parts = |method: &str, uri: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let users = parts("POST", "/api/v1/users");
        let base = request_hash(&users, b"{}");
        assert_eq!(base, request_hash(&parts("POST", "/api/v1/users"), b"{}"));
        assert_ne!(base, request_hash(&users, b"{ }"));
        assert_ne!(base, request_hash(&parts("POST", "/api/v1/events"), b"{}"));
        assert_ne!(base, request_hash(&parts("PUT", "/api/v1/users"), b"{}"));
        assert_eq!(base.len(), 64);
    }
}
