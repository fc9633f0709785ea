//! JWT bearer tokens: signature (HS256 with `JWT_SECRET`; RS256 or ES256
//! with `JWT_PUBLIC_KEY_FILE` or the keys of `JWT_JWKS_URL`), `exp` (always
//! required), `nbf`, `iss` and `aud` (when configured), all with
//! `JWT_LEEWAY` of clock skew. Scopes come from `scope` (space-separated)
//! or `scp` (a string or a list); a token with neither and a `role` (the
//! Go service's tokens, and those of `AUTH_MODE=accounts`) has the role's
//! scopes (see [`Role`]).
//!
//! The algorithm is the key's, never the token's: a token whose header
//! names another one is refused (no HS256 signed with a public key).
//!
//! A JWKS is fetched at the first request, again once it is older than
//! `JWT_JWKS_REFRESH` (by one request; the others keep using the keys they
//! have), and at once for a token whose `kid` it lacks (key rotation), but
//! never twice within `JWT_JWKS_MIN_REFRESH`. When a fetch fails the keys
//! fetched before stay in use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{AuthError, CredentialKind, Principal, Role, Scopes};
use crate::config::auth::{JwtConfig, JwtKeys, key_from_pem};

/// Time limit of one JWKS fetch.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A verification key and the one algorithm it is used with.
#[derive(Clone)]
struct Key {
    key: Arc<DecodingKey>,
    algorithm: Algorithm,
}

pub(crate) struct JwtVerifier {
    keys: KeySource,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

enum KeySource {
    Fixed(Key),
    Jwks(Jwks),
}

/// The latest `exp` accepted: the end of the year 9999. Beyond it a time is
/// no date any clock or database here can hold.
const LATEST_EXPIRY: u64 = 253_402_300_799;

/// The claims this service reads; `exp`, `iss`, `aud` and `nbf` are checked
/// by the library, and here what it lets pass: an `exp` no date can be, an
/// `iss` that is not one string (RFC 7519: a StringOrURI).
#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Scp>,
    /// The Go service's claims.
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scp {
    Text(String),
    List(Vec<String>),
}

impl JwtVerifier {
    pub(crate) fn new(config: &JwtConfig) -> anyhow::Result<Self> {
        let keys = match &config.keys {
            JwtKeys::Secret(secret) => KeySource::Fixed(Key {
                key: Arc::new(DecodingKey::from_secret(secret.expose_secret().as_bytes())),
                algorithm: Algorithm::HS256,
            }),
            JwtKeys::PublicKeyPem(pem) => {
                let (key, algorithm) = key_from_pem(pem)
                    .map_err(|reason| anyhow::anyhow!("JWT_PUBLIC_KEY_FILE: {reason}"))?;
                KeySource::Fixed(Key {
                    key: Arc::new(key),
                    algorithm,
                })
            }
            JwtKeys::Jwks {
                url,
                refresh,
                min_refresh,
            } => KeySource::Jwks(Jwks::new(url.clone(), *refresh, *min_refresh)?),
        };
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway.as_secs(),
        })
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        const INVALID: AuthError = AuthError::Invalid("the token is not valid");
        let header = jsonwebtoken::decode_header(token).map_err(|_| INVALID)?;
        // `crit` names extensions the verifier must understand, and this
        // one understands none (RFC 7515, 4.1.11): refused whatever they are.
        if header.crit.is_some() {
            tracing::debug!("jwt refused: it names critical extensions (crit)");
            return Err(INVALID);
        }
        let key = match &self.keys {
            KeySource::Fixed(key) => key.clone(),
            KeySource::Jwks(jwks) => jwks.key(header.kid.as_deref()).await?.ok_or(INVALID)?,
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|err| {
            tracing::debug!(error = %err, "jwt refused");
            match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    AuthError::Invalid("the token has expired")
                }
                _ => INVALID,
            }
        })?;
        let claims = data.claims;
        if claims.exp > LATEST_EXPIRY {
            tracing::debug!(exp = claims.exp, "jwt refused: exp is past the year 9999");
            return Err(INVALID);
        }
        if claims.iss.as_ref().is_some_and(|iss| !iss.is_string()) {
            tracing::debug!("jwt refused: iss is not a string");
            return Err(INVALID);
        }
        let scopes = match (&claims.scope, &claims.scp) {
            (Some(scope), _) => Some(Scopes::from_names(scope.split_whitespace())),
            (None, Some(Scp::Text(scp))) => Some(Scopes::from_names(scp.split_whitespace())),
            (None, Some(Scp::List(scp))) => {
                Some(Scopes::from_names(scp.iter().map(String::as_str)))
            }
            (None, None) => None,
        };
        // A role counts only where no scopes are named; an unknown role
        // grants nothing.
        let role = match scopes {
            Some(_) => None,
            None => claims.role.as_deref().and_then(Role::parse),
        };
        Ok(Principal {
            kind: CredentialKind::Token,
            subject: claims.sub.or(claims.user_id).unwrap_or_default(),
            scopes: scopes.unwrap_or_else(|| role.map(Role::scopes).unwrap_or_default()),
            role,
            email: claims.email,
        })
    }
}

/// The keys of a JWKS, fetched now and then.
struct Jwks {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    min_refresh: Duration,
    state: RwLock<JwksState>,
    /// Held by the one request that fetches.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct JwksState {
    keys: HashMap<String, Key>,
    /// A key without `kid`, for tokens without one.
    anonymous: Option<Key>,
    fetched_at: Option<Instant>,
}

impl JwksState {
    fn find(&self, kid: Option<&str>) -> Option<Key> {
        match kid {
            Some(kid) => self.keys.get(kid).cloned(),
            None => self.anonymous.clone().or_else(|| {
                // One key, whatever its kid: the token needs no name for it.
                (self.keys.len() == 1)
                    .then(|| self.keys.values().next().cloned())
                    .flatten()
            }),
        }
    }
}

impl Jwks {
    fn new(url: String, refresh: Duration, min_refresh: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .context("failed to build the JWKS client")?;
        Ok(Self {
            url,
            client,
            refresh,
            min_refresh,
            state: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The key named `kid`: `Ok(None)` when the set has no such key,
    /// `Err` when the set could never be fetched.
    async fn key(&self, kid: Option<&str>) -> Result<Option<Key>, AuthError> {
        let (found, fetched_at) = {
            let state = self.state.read().expect("BUG: JWKS lock poisoned");
            (state.find(kid), state.fetched_at)
        };
        let age = fetched_at.map(|at| at.elapsed());
        match (found, age) {
            (Some(key), Some(age)) if age < self.refresh => Ok(Some(key)),
            // Stale: one request refreshes, the others use what they have.
            (Some(key), _) => {
                if let Ok(_fetching) = self.fetching.try_lock() {
                    self.fetch_if_unchanged(fetched_at).await;
                }
                let state = self.state.read().expect("BUG: JWKS lock poisoned");
                Ok(state.find(kid).or(Some(key)))
            }
            (None, Some(age)) if age < self.min_refresh => Ok(None),
            (None, _) => {
                let _fetching = self.fetching.lock().await;
                self.fetch_if_unchanged(fetched_at).await;
                let state = self.state.read().expect("BUG: JWKS lock poisoned");
                match (state.find(kid), state.fetched_at) {
                    (Some(key), _) => Ok(Some(key)),
                    (None, Some(_)) => Ok(None),
                    (None, None) => Err(AuthError::Unavailable(anyhow::anyhow!(
                        "the JWKS could not be fetched"
                    ))),
                }
            }
        }
    }

    /// Fetches the set unless another request did since `seen`; on failure
    /// the keys fetched before stay.
    async fn fetch_if_unchanged(&self, seen: Option<Instant>) {
        let current = self
            .state
            .read()
            .expect("BUG: JWKS lock poisoned")
            .fetched_at;
        if current != seen {
            return;
        }
        match self.fetch().await {
            Ok(fresh) => {
                tracing::info!(keys = fresh.keys.len(), "jwks fetched");
                *self.state.write().expect("BUG: JWKS lock poisoned") = fresh;
            }
            Err(err) => tracing::warn!(error = format!("{err:#}"), "failed to fetch the jwks"),
        }
    }

    async fn fetch(&self) -> anyhow::Result<JwksState> {
        let body = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("JWT_JWKS_URL did not answer")?
            .bytes()
            .await
            .context("JWT_JWKS_URL did not send its body")?;
        let set: JwkSet = serde_json::from_slice(&body).context("JWT_JWKS_URL sent no JWKS")?;
        let mut state = JwksState {
            fetched_at: Some(Instant::now()),
            ..JwksState::default()
        };
        for jwk in &set.keys {
            // Keys for other uses or algorithms are skipped, not fatal.
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                // Shared secrets have no place in a published set.
                (Some(alg), _) => match alg.to_string().parse::<Algorithm>() {
                    Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
                        continue;
                    }
                    Ok(alg) => alg,
                },
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(ec))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (None, _) => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let key = Key {
                key: Arc::new(key),
                algorithm,
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    state.keys.insert(kid.clone(), key);
                }
                None => state.anonymous = Some(key),
            }
        }
        Ok(state)
    }
}
