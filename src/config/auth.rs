//! The authentication settings (`AUTH_MODE`, `API_KEY_*`, `JWT_*`,
//! `METRICS_TOKEN`), parsed by clap with the rest of the configuration and
//! resolved once, at load: a mode that lacks what it needs, or a key file
//! that does not parse, stops start-up naming the variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::{ExposeSecret, SecretString};

use crate::config::error::ConfigError;
use crate::config::parse::{parse_duration, secret};

/// The shortest `JWT_SECRET` accepted, in bytes: HS256 wants a key at
/// least as long as its hash (RFC 7518, section 3.2).
const MIN_JWT_SECRET_LEN: usize = 32;

/// Which credential the API requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No authentication (every client is served, as before)
    None,
    /// An API key created with `highload api-key create`
    ApiKey,
    /// A JWT bearer token
    Jwt,
    /// Built-in accounts: login, refresh and logout under /api/v1/auth; their access tokens
    /// (HS256 with JWT_SECRET, as the Go service signs them) or an API key
    Accounts,
}

/// The settings as clap reads them; [`AuthArgs::resolve`] checks them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Authentication (off unless AUTH_MODE is set)")]
pub(super) struct AuthArgs {
    /// Credential the API requires: none, api-key (X-API-Key or Authorization: Bearer), or jwt
    /// (Authorization: Bearer). Health, /docs and /openapi.json stay open
    #[arg(long, env = "AUTH_MODE", value_name = "AUTH_MODE", value_enum, default_value_t = AuthMode::None)]
    auth_mode: AuthMode,

    /// How long a verified API key is trusted without asking the database: a revoked key keeps
    /// working at most this long (0s: ask at every request)
    #[arg(long, env = "API_KEY_CACHE_TTL", value_name = "API_KEY_CACHE_TTL", default_value = "30s",
          value_parser = parse_duration)]
    api_key_cache_ttl: Duration,

    /// HS256 secret of the JWTs (at least 32 bytes)
    #[arg(long, env = "JWT_SECRET", value_name = "JWT_SECRET", hide_env_values = true, value_parser = secret)]
    jwt_secret: Option<SecretString>,

    /// PEM file with the public key (RSA: RS256, P-256: ES256) of the JWTs
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", value_name = "JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,

    /// URL of the JSON Web Key Set of the JWTs' issuer (keys chosen by `kid`)
    #[arg(long, env = "JWT_JWKS_URL", value_name = "JWT_JWKS_URL")]
    jwt_jwks_url: Option<String>,

    /// How often the JWKS is fetched again (also at once for a `kid` it lacks)
    #[arg(long, env = "JWT_JWKS_REFRESH", value_name = "JWT_JWKS_REFRESH", default_value = "5m",
          value_parser = parse_duration)]
    jwt_jwks_refresh: Duration,

    /// Shortest time between two JWKS fetches: caps what tokens with unknown `kid`s can cause
    #[arg(long, env = "JWT_JWKS_MIN_REFRESH", value_name = "JWT_JWKS_MIN_REFRESH", default_value = "10s",
          value_parser = parse_duration)]
    jwt_jwks_min_refresh: Duration,

    /// Required `iss` claim (unset: not checked)
    #[arg(long, env = "JWT_ISSUER", value_name = "JWT_ISSUER")]
    jwt_issuer: Option<String>,

    /// Required `aud` claim (unset: not checked)
    #[arg(long, env = "JWT_AUDIENCE", value_name = "JWT_AUDIENCE")]
    jwt_audience: Option<String>,

    /// Clock skew allowed when checking `exp` and `nbf`
    #[arg(long, env = "JWT_LEEWAY", value_name = "JWT_LEEWAY", default_value = "60s",
          value_parser = parse_duration)]
    jwt_leeway: Duration,

    /// Lifetime of an access token issued at login or refresh (AUTH_MODE=accounts) [default: 15m;
    /// else JWT_EXPIRATION_HOURS, the Go service's]
    #[arg(long, env = "ACCESS_TOKEN_TTL", value_name = "ACCESS_TOKEN_TTL", value_parser = parse_duration)]
    access_token_ttl: Option<Duration>,

    /// The Go service's access token lifetime, in hours (ACCESS_TOKEN_TTL wins)
    #[arg(long, env = "JWT_EXPIRATION_HOURS", value_name = "JWT_EXPIRATION_HOURS",
          value_parser = clap::value_parser!(u64).range(1..=8760))]
    jwt_expiration_hours: Option<u64>,

    /// Lifetime of a refresh token; each use replaces it with a new one [default: 7d; else
    /// REFRESH_EXPIRATION_DAYS, the Go service's]
    #[arg(long, env = "REFRESH_TOKEN_TTL", value_name = "REFRESH_TOKEN_TTL", value_parser = parse_duration)]
    refresh_token_ttl: Option<Duration>,

    /// The Go service's refresh token lifetime, in days (REFRESH_TOKEN_TTL wins)
    #[arg(long, env = "REFRESH_EXPIRATION_DAYS", value_name = "REFRESH_EXPIRATION_DAYS",
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    refresh_expiration_days: Option<u64>,

    /// Failed logins allowed per account, and per client address, within LOGIN_LOCKOUT; more
    /// are answered 429 until it ends
    #[arg(long, env = "LOGIN_MAX_FAILURES", value_name = "LOGIN_MAX_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    login_max_failures: u32,

    /// The window of LOGIN_MAX_FAILURES
    #[arg(long, env = "LOGIN_LOCKOUT", value_name = "LOGIN_LOCKOUT", default_value = "15m",
          value_parser = parse_duration)]
    login_lockout: Duration,

    /// Bearer token that GET /metrics requires, whatever AUTH_MODE says (unset: /metrics is open)
    #[arg(long, env = "METRICS_TOKEN", value_name = "METRICS_TOKEN", hide_env_values = true, value_parser = secret)]
    metrics_token: Option<SecretString>,
}

/// The authentication settings, checked.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// How long a verified API key (or an unknown one) is remembered.
    pub api_key_cache_ttl: Duration,
    /// Set when `mode` is [`AuthMode::Jwt`].
    pub jwt: Option<JwtConfig>,
    /// The bearer token of `/metrics`.
    pub metrics_token: Option<SecretString>,
    /// Set when `mode` is [`AuthMode::Accounts`].
    pub accounts: Option<AccountsConfig>,
}

/// How built-in accounts behave (`AUTH_MODE=accounts`).
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// Signs the access tokens (HS256), and verifies them with
    /// [`AuthConfig::jwt`].
    pub jwt_secret: SecretString,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Failed logins allowed per account, and per client, within `lockout`.
    pub max_failures: u32,
    pub lockout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            api_key_cache_ttl: Duration::from_secs(30),
            jwt: None,
            metrics_token: None,
            accounts: None,
        }
    }
}

/// How JWTs are checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub keys: JwtKeys,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

/// Where the keys that sign JWTs come from.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// HS256 with this secret.
    Secret(SecretString),
    /// RS256 or ES256 with the public key of this PEM (its contents).
    PublicKeyPem(Vec<u8>),
    /// The keys of a JWKS, by `kid`.
    Jwks {
        url: String,
        refresh: Duration,
        min_refresh: Duration,
    },
}

impl AuthArgs {
    pub(super) fn resolve(self) -> Result<AuthConfig, ConfigError> {
        let jwt = match self.auth_mode {
            AuthMode::Jwt => Some(JwtConfig {
                keys: self.jwt_keys()?,
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
                leeway: self.jwt_leeway,
            }),
            AuthMode::Accounts => {
                if self.jwt_secret.is_none() {
                    return Err(invalid("AUTH_MODE", "accounts needs JWT_SECRET"));
                }
                if self.jwt_public_key_file.is_some() || self.jwt_jwks_url.is_some() {
                    return Err(invalid(
                        "AUTH_MODE",
                        "accounts signs with JWT_SECRET; unset JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL",
                    ));
                }
                Some(JwtConfig {
                    keys: self.jwt_keys()?,
                    issuer: self.jwt_issuer.clone(),
                    audience: self.jwt_audience.clone(),
                    leeway: self.jwt_leeway,
                })
            }
            AuthMode::None | AuthMode::ApiKey => None,
        };
        let accounts = (self.auth_mode == AuthMode::Accounts).then(|| AccountsConfig {
            jwt_secret: self.jwt_secret.clone().expect("checked above"),
            access_ttl: self.access_token_ttl.unwrap_or_else(|| {
                self.jwt_expiration_hours
                    .map_or(Duration::from_secs(15 * 60), |h| {
                        Duration::from_secs(h * 3600)
                    })
            }),
            refresh_ttl: self.refresh_token_ttl.unwrap_or_else(|| {
                Duration::from_secs(self.refresh_expiration_days.unwrap_or(7) * 86_400)
            }),
            max_failures: self.login_max_failures,
            lockout: self.login_lockout,
        });
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|token| token.expose_secret().trim().is_empty())
        {
            return Err(invalid("METRICS_TOKEN", "must not be blank"));
        }
        Ok(AuthConfig {
            mode: self.auth_mode,
            api_key_cache_ttl: self.api_key_cache_ttl,
            jwt,
            metrics_token: self.metrics_token,
            accounts,
        })
    }

    /// Exactly one of `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`, `JWT_JWKS_URL`.
    fn jwt_keys(&self) -> Result<JwtKeys, ConfigError> {
        match (
            &self.jwt_secret,
            &self.jwt_public_key_file,
            &self.jwt_jwks_url,
        ) {
            (Some(secret), None, None) => {
                if secret.expose_secret().len() < MIN_JWT_SECRET_LEN {
                    return Err(invalid(
                        "JWT_SECRET",
                        format!("must be at least {MIN_JWT_SECRET_LEN} bytes"),
                    ));
                }
                Ok(JwtKeys::Secret(secret.clone()))
            }
            (None, Some(path), None) => {
                let pem = std::fs::read(path).map_err(|err| {
                    invalid(
                        "JWT_PUBLIC_KEY_FILE",
                        format!("cannot read {}: {err}", path.display()),
                    )
                })?;
                key_from_pem(&pem).map_err(|reason| {
                    invalid(
                        "JWT_PUBLIC_KEY_FILE",
                        format!("{}: {reason}", path.display()),
                    )
                })?;
                Ok(JwtKeys::PublicKeyPem(pem))
            }
            (None, None, Some(url)) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    return Err(invalid(
                        "JWT_JWKS_URL",
                        "must start with https:// or http://",
                    ));
                }
                Ok(JwtKeys::Jwks {
                    url: url.clone(),
                    refresh: self.jwt_jwks_refresh,
                    min_refresh: self.jwt_jwks_min_refresh,
                })
            }
            (None, None, None) => Err(invalid(
                "AUTH_MODE",
                "jwt needs JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL",
            )),
            _ => Err(invalid(
                "AUTH_MODE",
                "set only one of JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL",
            )),
        }
    }
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        reason: reason.into(),
    }
}

/// The key of a PEM public key: RS256 for RSA, ES256 for P-256. The
/// settings check `JWT_PUBLIC_KEY_FILE` with it at start; verification
/// takes its key from it.
pub(crate) fn key_from_pem(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    DecodingKey::from_ec_pem(pem)
        .map(|key| (key, Algorithm::ES256))
        .map_err(|_| "not a PEM RSA or P-256 public key".to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    fn resolve(args: &[&str]) -> Result<AuthConfig, ConfigError> {
        Cli::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
            .expect("arguments parse")
            .auth
            .resolve()
    }

    #[test]
    fn authentication_is_off_by_default() {
        let config = resolve(&[]).unwrap();
        assert_eq!(config.mode, AuthMode::None);
        assert!(config.jwt.is_none() && config.metrics_token.is_none());
        assert_eq!(config.api_key_cache_ttl, Duration::from_secs(30));
    }

    #[test]
    fn jwt_mode_needs_exactly_one_key_source() {
        let err = resolve(&["--auth-mode", "jwt"]).unwrap_err();
        assert_eq!(err.variable(), "AUTH_MODE");
        let secret = "s".repeat(32);
        let err = resolve(&[
            "--auth-mode",
            "jwt",
            "--jwt-secret",
            &secret,
            "--jwt-jwks-url",
            "https://idp/jwks",
        ])
        .unwrap_err();
        assert_eq!(err.variable(), "AUTH_MODE");
        let err = resolve(&["--auth-mode", "jwt", "--jwt-secret", "short"]).unwrap_err();
        assert_eq!(err.variable(), "JWT_SECRET");
        assert!(!err.to_string().contains("short"), "{err}");
        let err = resolve(&["--auth-mode", "jwt", "--jwt-jwks-url", "ftp://x"]).unwrap_err();
        assert_eq!(err.variable(), "JWT_JWKS_URL");
        let config = resolve(&["--auth-mode", "jwt", "--jwt-secret", &secret]).unwrap();
        assert!(matches!(config.jwt.unwrap().keys, JwtKeys::Secret(_)));
    }

    #[test]
    fn a_public_key_file_that_does_not_parse_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "not a key").unwrap();
        let path = path.to_str().unwrap();
        let err = resolve(&["--auth-mode", "jwt", "--jwt-public-key-file", path]).unwrap_err();
        assert_eq!(err.variable(), "JWT_PUBLIC_KEY_FILE");
        let err = resolve(&[
            "--auth-mode",
            "jwt",
            "--jwt-public-key-file",
            "/nonexistent.pem",
        ])
        .unwrap_err();
        assert_eq!(err.variable(), "JWT_PUBLIC_KEY_FILE");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let secret = "x".repeat(40);
        let config = resolve(&[
            "--auth-mode",
            "jwt",
            "--jwt-secret",
            &secret,
            "--metrics-token",
            "scrape-me-please",
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(&secret) && !debug.contains("scrape-me-please"),
            "{debug}"
        );
    }
}
