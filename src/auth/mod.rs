//! Authentication of the API: off by default (`AUTH_MODE=none`), so that
//! existing clients keep working; `api-key` or `jwt` when configured.
//!
//! A credential carries scopes, and each route needs one, by method:
//! reads (`GET`, `HEAD`) need `read`, changes (`POST`, `PUT`, `PATCH`)
//! need `write`, `DELETE` needs `admin`; `admin` grants every scope.
//! No credential, or one that does not verify, is a 401 with
//! `WWW-Authenticate: Bearer`; a valid one without the scope is a 403. Both
//! are problem+json with a short reason, never the details of a failed
//! check (those go to the debug log).
//!
//! Health endpoints, `/docs` and `/openapi.json` are never authenticated;
//! `/metrics` requires `METRICS_TOKEN` when it is set, whatever the mode.
//!
//! Verification costs no round trip per request: API keys are remembered
//! for `API_KEY_CACHE_TTL` after a database look-up (so a revoked key keeps
//! working at most that long), JWTs are checked in memory against keys
//! loaded at start-up or fetched from a JWKS now and then.

pub(crate) mod accounts;
pub mod api_key;
pub mod cli;
mod jwt;
pub mod openapi;

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderMap, Method, header};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

pub use crate::config::auth::{AccountsConfig, AuthConfig, AuthMode, JwtConfig, JwtKeys};

use api_key::{ApiKeys, KeyStore};
use jwt::JwtVerifier;

/// The header an API key may come in (else `Authorization: Bearer`).
const API_KEY_HEADER: &str = "x-api-key";

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == raw)
    }

    /// The scope a request with this method needs.
    pub fn for_method(method: &Method) -> Self {
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Self::Read,
            Method::DELETE => Self::Admin,
            _ => Self::Write,
        }
    }

    /// The scope a request needs: by method, but creating API keys and the
    /// admin views need `admin`, and so does creating a user for a
    /// credential that holds a role (the Go service's rule for its
    /// accounts).
    pub(crate) fn for_request(method: &Method, path: &str, has_role: bool) -> Self {
        match (method, path) {
            (&Method::POST, "/api/v1/api-keys") => Self::Admin,
            (_, admin) if admin.starts_with("/admin/") || admin.starts_with("/debug/") => {
                Self::Admin
            }
            (&Method::POST, "/api/v1/users") if has_role => Self::Admin,
            _ => Self::for_method(method),
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role of an account, and of the Go service's tokens (`role`): a
/// role is a set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every scope.
    Admin,
    /// Reads and writes.
    User,
    /// Reads.
    ReadOnly,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::User, Role::ReadOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::ReadOnly => "readonly",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == raw)
    }

    pub fn scopes(self) -> Scopes {
        match self {
            Self::Admin => Scope::ALL.into_iter().collect(),
            Self::User => [Scope::Read, Scope::Write].into_iter().collect(),
            Self::ReadOnly => [Scope::Read].into_iter().collect(),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Whether these scopes allow what `scope` guards (`admin` allows all).
    pub fn allow(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The known scopes among `names`; others are ignored (an identity
    /// provider's tokens carry scopes of other services too).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            names
                .into_iter()
                .filter_map(Scope::parse)
                .fold(0, |bits, scope| bits | scope.bit()),
        )
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

impl fmt::Display for Scopes {
    /// Comma-separated, as stored and as the CLI takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// Who made a request, as verified; added to the request's extensions.
#[derive(Debug, Clone)]
pub struct Principal {
    /// What verified: an API key or a token.
    pub kind: CredentialKind,
    /// The API key's id, or the token's `sub` (else its `user_id`): the
    /// same for every token of one subject.
    pub subject: String,
    pub scopes: Scopes,
    /// The token's `role`, when its scopes come from one.
    pub role: Option<Role>,
    /// The token's `email`, if it has one.
    pub email: Option<String>,
}

/// The kinds of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey,
    Token,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api-key",
            Self::Token => "token",
        }
    }
}

/// Why a request was refused.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// No credential was sent.
    Missing,
    /// A credential was sent and did not verify; the reason is short and
    /// says nothing about what was checked.
    Invalid(&'static str),
    /// Verified, without the scope the route needs.
    Forbidden(Scope),
    /// The database or the JWKS could not be reached.
    Unavailable(anyhow::Error),
}

/// Checks the credentials of requests, as `AUTH_MODE` says.
pub struct Authenticator {
    verifier: Verifier,
    /// The credentials that verified lately.
    verified: VerifiedCredentials,
    /// SHA-256 of `METRICS_TOKEN`: compared digest to digest, so the
    /// comparison takes as long whatever the token sent.
    metrics_token: Option<[u8; 32]>,
}

enum Verifier {
    None,
    ApiKey(ApiKeys),
    Jwt(JwtVerifier),
    /// The accounts' access tokens, or an API key.
    Accounts(JwtVerifier, ApiKeys),
}

impl Authenticator {
    /// Builds what the mode needs; connects to nothing yet (`keys`, the
    /// store's table, is read at the first request with a key, the JWKS is
    /// fetched at the first request).
    pub fn build(config: &AuthConfig, keys: KeyStore) -> anyhow::Result<Self> {
        let verifier = match config.mode {
            AuthMode::None => Verifier::None,
            AuthMode::ApiKey => Verifier::ApiKey(ApiKeys::new(keys, config.api_key_cache_ttl)),
            AuthMode::Jwt => Verifier::Jwt(JwtVerifier::new(jwt_of(config)?)?),
            AuthMode::Accounts => Verifier::Accounts(
                JwtVerifier::new(jwt_of(config)?)?,
                ApiKeys::new(keys, config.api_key_cache_ttl),
            ),
        };
        Ok(Self {
            verifier,
            verified: VerifiedCredentials::default(),
            metrics_token: config
                .metrics_token
                .as_ref()
                .map(|token| sha256(token.expose_secret().as_bytes())),
        })
    }

    pub fn mode(&self) -> AuthMode {
        match self.verifier {
            Verifier::None => AuthMode::None,
            Verifier::ApiKey(_) => AuthMode::ApiKey,
            Verifier::Jwt(_) => AuthMode::Jwt,
            Verifier::Accounts(..) => AuthMode::Accounts,
        }
    }

    /// Whether the request may read `/metrics`: with `METRICS_TOKEN` set,
    /// only with `Authorization: Bearer <METRICS_TOKEN>`.
    pub(crate) fn check_metrics_token(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(expected) = &self.metrics_token else {
            return Ok(());
        };
        match bearer_of(headers) {
            Ok(Some(token)) if constant_time_eq(&sha256(token.as_bytes()), expected) => Ok(()),
            Ok(Some(_)) | Err(_) => Err(AuthError::Invalid("the metrics token is not valid")),
            Ok(None) => Err(AuthError::Missing),
        }
    }

    /// The credentials that verified lately, as the rate limit asks.
    pub(crate) fn verified(&self) -> VerifiedCredentials {
        self.verified.clone()
    }

    /// The request's verified principal; `None` when `AUTH_MODE=none`.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, AuthError> {
        let principal = self.verify(headers).await?;
        if principal.is_some()
            && let Some(digest) = credential_digest(headers)
        {
            self.verified.remember(digest);
        }
        Ok(principal)
    }

    async fn verify(&self, headers: &HeaderMap) -> Result<Option<Principal>, AuthError> {
        Ok(Some(match &self.verifier {
            Verifier::None => return Ok(None),
            Verifier::ApiKey(keys) => {
                let key = api_key_of(headers)?.ok_or(AuthError::Missing)?;
                keys.verify(key).await?
            }
            Verifier::Jwt(verifier) => {
                let token = bearer_of(headers)?.ok_or(AuthError::Missing)?;
                verifier.verify(token).await?
            }
            Verifier::Accounts(tokens, keys) => {
                let credential = api_key_of(headers)?.ok_or(AuthError::Missing)?;
                if credential.starts_with(api_key::KEY_PREFIX) {
                    keys.verify(credential).await?
                } else {
                    tokens.verify(credential).await?
                }
            }
        }))
    }

    /// The request's principal, if it holds the scope the request needs
    /// (see [`Scope::for_request`]).
    pub(crate) async fn authorize(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(principal) = self.authenticate(headers).await? else {
            return Ok(None);
        };
        let needed = Scope::for_request(method, path, principal.role.is_some());
        if principal.scopes.allow(needed) {
            Ok(Some(principal))
        } else {
            Err(AuthError::Forbidden(needed))
        }
    }
}

fn jwt_of(config: &AuthConfig) -> anyhow::Result<&JwtConfig> {
    config
        .jwt
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("BUG: AUTH_MODE={:?} without its JWT settings", config.mode))
}

/// How long a credential that verified counts as its own client for the
/// rate limit after its last use.
const VERIFIED_FOR: Duration = Duration::from_secs(300);

/// The most credentials remembered as verified (the least recently
/// verified go first).
const VERIFIED_ENTRIES: u64 = 100_000;

/// The hashes of the credentials that verified within [`VERIFIED_FOR`]:
/// the rate limit counts a request against its credential only when that
/// credential is one of them, so that made-up credentials count against
/// their sender's address. Empty when `AUTH_MODE=none`.
#[derive(Clone)]
pub(crate) struct VerifiedCredentials(moka::sync::Cache<[u8; 32], ()>);

impl Default for VerifiedCredentials {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(VERIFIED_ENTRIES)
                .time_to_idle(VERIFIED_FOR)
                .build(),
        )
    }
}

impl VerifiedCredentials {
    /// Remembers a credential's hash as verified now.
    /// (A look-up, which keeps a known one fresh, costs less than the
    /// insert every request would otherwise make.)
    pub(crate) fn remember(&self, digest: [u8; 32]) {
        if self.0.get(&digest).is_none() {
            self.0.insert(digest, ());
        }
    }

    /// The request's credential's hash, if it verified lately.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<[u8; 32]> {
        credential_digest(headers).filter(|digest| self.0.contains_key(digest))
    }
}

/// A hash of the client's credential (`X-API-Key`, else the token of
/// `Authorization: Bearer`), if it sends one.
fn credential_digest(headers: &HeaderMap) -> Option<[u8; 32]> {
    let credential = headers
        .get(API_KEY_HEADER)
        .map(|v| v.as_bytes())
        .or_else(|| {
            let value = headers.get(header::AUTHORIZATION)?.as_bytes();
            let (scheme, token) = value.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then_some(token.trim_ascii())
        })?;
    (!credential.is_empty()).then(|| sha256(credential))
}

/// The token of `Authorization: Bearer <token>`, if that header is sent.
fn bearer_of(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not readable"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Invalid("use Authorization: Bearer <credential>"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid("use Authorization: Bearer <credential>"));
    }
    Ok(Some(token))
}

/// An API key from `X-API-Key`, else from `Authorization: Bearer`.
fn api_key_of(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    match headers.get(API_KEY_HEADER) {
        Some(value) => value
            .to_str()
            .map(|key| Some(key.trim()))
            .map_err(|_| AuthError::Invalid("the X-API-Key header is not readable")),
        None => bearer_of(headers),
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn admin_allows_every_scope_and_the_others_only_their_own() {
        let read = Scopes::from_names(["read"]);
        assert!(read.allow(Scope::Read));
        assert!(!read.allow(Scope::Write) && !read.allow(Scope::Admin));
        let admin = Scopes::from_names(["admin"]);
        assert!(Scope::ALL.into_iter().all(|s| admin.allow(s)));
        let mixed = Scopes::from_names(["read", "write", "users:delete"]);
        assert_eq!(mixed.to_string(), "read,write");
    }

    #[test]
    fn methods_map_to_scopes() {
        assert_eq!(Scope::for_method(&Method::GET), Scope::Read);
        assert_eq!(Scope::for_method(&Method::POST), Scope::Write);
        assert_eq!(Scope::for_method(&Method::PUT), Scope::Write);
        assert_eq!(Scope::for_method(&Method::DELETE), Scope::Admin);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_other_schemes_refused() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer_of(&headers), Ok(None)));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert!(matches!(bearer_of(&headers), Ok(Some("abc"))));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer_of(&headers), Err(AuthError::Invalid(_))));
        headers.insert("x-api-key", HeaderValue::from_static("hlk_x"));
        assert!(matches!(api_key_of(&headers), Ok(Some("hlk_x"))));
    }
}
