//! What the HTTP edge enforces per client (`RATE_LIMIT_*`,
//! `TRUSTED_PROXY_HOPS`, `IDEMPOTENCY_KEY_TTL`, `CORS_ALLOWED_ORIGINS`),
//! with the parsers of those values.

use std::time::Duration;

use clap::Args;

use crate::config::error::ConfigError;
use crate::config::parse::parse_duration;

/// What the HTTP edge enforces per client: a rate limit, idempotency keys,
/// and which browser origins may call the API.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// `None`: no rate limit (the default).
    pub rate_limit: Option<RateLimitConfig>,
    /// Proxies in front of the service that append to `X-Forwarded-For`;
    /// the client address is the one the farthest of them saw.
    pub trusted_proxy_hops: u32,
    /// How long a stored response is replayed for its `Idempotency-Key`.
    pub idempotency_key_ttl: Duration,
    /// Origins allowed by CORS (`*`: any); empty: no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
    /// The rest of CORS.
    pub cors: CorsSettings,
    /// `None`: no limit of its own on `/api/v1/auth/*`.
    pub auth_rate_limit: Option<RateLimitConfig>,
    /// Security headers the Go service's settings change.
    pub security_headers: SecurityHeaders,
}

/// CORS beyond the origins: what a preflight allows.
#[derive(Debug, Clone, Default)]
pub struct CorsSettings {
    /// Methods allowed; empty: GET, POST, PUT, DELETE.
    pub methods: Vec<String>,
    /// Request headers allowed besides the API's own.
    pub headers: Vec<String>,
    /// Response headers exposed besides the API's own.
    pub exposed_headers: Vec<String>,
    /// Whether credentials (cookies, Authorization) may be sent.
    pub allow_credentials: bool,
    /// How long a preflight is cached; `None`: 10 minutes.
    pub max_age: Option<Duration>,
}

/// The security headers of every response, as the Go service's
/// `SECURITY_*` settings change them.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    /// `Content-Security-Policy` of the API's answers (not of `/docs`).
    pub api_policy: Option<String>,
    pub referrer_policy: String,
    /// `X-Frame-Options: DENY`.
    pub frame_deny: bool,
    /// `X-Content-Type-Options: nosniff`.
    pub nosniff: bool,
    pub permissions_policy: Option<String>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            api_policy: None,
            referrer_policy: "no-referrer".into(),
            frame_deny: true,
            nosniff: true,
            permissions_policy: None,
        }
    }
}

/// A token bucket per client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Tokens added per second (may be below one).
    pub per_second: f64,
    /// Size of the bucket: requests a client may send at once.
    pub burst: u32,
    /// Clients tracked at once; the least recently seen go first.
    pub max_clients: u64,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Client guards (rate limit, idempotency keys, CORS)")]
pub(super) struct GuardArgs {
    /// Requests per second each client may send, on average, to the API (not to /health* and
    /// /metrics); fractions allowed (0.5: one every two seconds). 0: no rate limit
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", value_name = "RATE_LIMIT_PER_SECOND",
          value_parser = parse_rate)]
    rate_limit_per_second: Option<f64>,

    /// Requests a client may send at once before the rate applies (default: one second's worth,
    /// at least 1)
    #[arg(long, env = "RATE_LIMIT_BURST", value_name = "RATE_LIMIT_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_burst: Option<u32>,

    /// Clients whose buckets are kept at once (memory bound); the least recently seen are
    /// forgotten first
    #[arg(long, env = "RATE_LIMIT_MAX_CLIENTS", value_name = "RATE_LIMIT_MAX_CLIENTS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    rate_limit_max_clients: u64,

    /// Proxies in front of the service that append the address they saw to X-Forwarded-For;
    /// 0: the header is ignored and the peer address identifies a client
    #[arg(long, env = "TRUSTED_PROXY_HOPS", value_name = "TRUSTED_PROXY_HOPS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    trusted_proxy_hops: u32,

    /// How long the response to a POST with an Idempotency-Key is replayed for that key (1s to 365days)
    #[arg(long, env = "IDEMPOTENCY_KEY_TTL", value_name = "IDEMPOTENCY_KEY_TTL", default_value = "24h",
          value_parser = parse_idempotency_key_ttl)]
    idempotency_key_ttl: Duration,

    /// Browser origins allowed to call the API, comma-separated (https://app.example.com), or *;
    /// empty: CORS is off
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_name = "CORS_ALLOWED_ORIGINS", value_delimiter = ',',
          value_parser = parse_origin)]
    cors_allowed_origins: Vec<String>,

    /// Methods a browser may use, comma-separated [default: GET,POST,PUT,DELETE]
    #[arg(long, env = "CORS_ALLOWED_METHODS", value_name = "CORS_ALLOWED_METHODS", value_delimiter = ',',
          value_parser = parse_method)]
    cors_allowed_methods: Vec<String>,

    /// Request headers a browser may send, besides Content-Type, Authorization, X-API-Key,
    /// Idempotency-Key and X-Request-ID; comma-separated
    #[arg(long, env = "CORS_ALLOWED_HEADERS", value_name = "CORS_ALLOWED_HEADERS", value_delimiter = ',',
          value_parser = parse_header_name)]
    cors_allowed_headers: Vec<String>,

    /// Response headers a browser may read, besides the API's own; comma-separated
    #[arg(long, env = "CORS_EXPOSED_HEADERS", value_name = "CORS_EXPOSED_HEADERS", value_delimiter = ',',
          value_parser = parse_header_name)]
    cors_exposed_headers: Vec<String>,

    /// Whether a browser may send cookies and Authorization to the allowed origins (not with *)
    #[arg(long, env = "CORS_ALLOW_CREDENTIALS", value_name = "CORS_ALLOW_CREDENTIALS",
          value_parser = clap::builder::BoolishValueParser::new())]
    cors_allow_credentials: Option<bool>,

    /// Seconds a browser may cache a preflight's answer [default: 600]
    #[arg(long, env = "CORS_MAX_AGE", value_name = "CORS_MAX_AGE",
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    cors_max_age: Option<u64>,

    /// The Go service's rate limit switch: true turns on RATE_LIMIT_REQUESTS_PER_MINUTE (and the
    /// limit of /api/v1/auth/*) unless RATE_LIMIT_PER_SECOND is set
    #[arg(long, env = "RATE_LIMIT_ENABLED", value_name = "RATE_LIMIT_ENABLED",
          value_parser = clap::builder::BoolishValueParser::new())]
    rate_limit_enabled: Option<bool>,

    /// The Go service's rate, per client and minute [default with RATE_LIMIT_ENABLED: 60]
    #[arg(long, env = "RATE_LIMIT_REQUESTS_PER_MINUTE", value_name = "RATE_LIMIT_REQUESTS_PER_MINUTE",
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_requests_per_minute: Option<u32>,

    /// The Go service's burst [default with RATE_LIMIT_ENABLED: 10]
    #[arg(long, env = "RATE_LIMIT_BURST_SIZE", value_name = "RATE_LIMIT_BURST_SIZE",
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_burst_size: Option<u32>,

    /// Requests per client and minute to /api/v1/auth/* (login, refresh) [default with
    /// RATE_LIMIT_ENABLED: 5]
    #[arg(long, env = "RATE_LIMIT_AUTH_REQUESTS_PER_MINUTE", value_name = "RATE_LIMIT_AUTH_REQUESTS_PER_MINUTE",
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_auth_requests_per_minute: Option<u32>,

    /// The burst of RATE_LIMIT_AUTH_REQUESTS_PER_MINUTE [default with RATE_LIMIT_ENABLED: 2]
    #[arg(long, env = "RATE_LIMIT_AUTH_BURST_SIZE", value_name = "RATE_LIMIT_AUTH_BURST_SIZE",
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_auth_burst_size: Option<u32>,

    /// Content-Security-Policy of the API's answers [default: default-src 'none'; frame-ancestors
    /// 'none'] (/docs keeps its own)
    #[arg(long, env = "SECURITY_CSP", value_name = "SECURITY_CSP", value_parser = parse_header_value)]
    security_csp: Option<String>,

    /// Referrer-Policy of every answer [default: no-referrer]
    #[arg(long, env = "SECURITY_REFERRER_POLICY", value_name = "SECURITY_REFERRER_POLICY",
          value_parser = parse_header_value)]
    security_referrer_policy: Option<String>,

    /// Whether every answer carries X-Frame-Options: DENY [default: true]
    #[arg(long, env = "SECURITY_FRAME_DENY", value_name = "SECURITY_FRAME_DENY",
          value_parser = clap::builder::BoolishValueParser::new())]
    security_frame_deny: Option<bool>,

    /// Whether every answer carries X-Content-Type-Options: nosniff [default: true]
    #[arg(long, env = "SECURITY_CONTENT_TYPE_NOSNIFF", value_name = "SECURITY_CONTENT_TYPE_NOSNIFF",
          value_parser = clap::builder::BoolishValueParser::new())]
    security_content_type_nosniff: Option<bool>,

    /// Permissions-Policy of every answer (unset: none)
    #[arg(long, env = "SECURITY_PERMISSIONS_POLICY", value_name = "SECURITY_PERMISSIONS_POLICY",
          value_parser = parse_header_value)]
    security_permissions_policy: Option<String>,
}

impl GuardArgs {
    pub(super) fn resolve(self) -> Result<GuardConfig, ConfigError> {
        if self.cors_allowed_origins.len() > 1 && self.cors_allowed_origins.iter().any(|o| o == "*")
        {
            return Err(ConfigError::Invalid {
                variable: "CORS_ALLOWED_ORIGINS",
                reason: "* allows any origin and cannot be listed with others".into(),
            });
        }
        let allow_credentials = self.cors_allow_credentials.unwrap_or(false);
        if allow_credentials && self.cors_allowed_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::Invalid {
                variable: "CORS_ALLOW_CREDENTIALS",
                reason: "browsers refuse credentials for any origin (*): list the origins in \
                         CORS_ALLOWED_ORIGINS"
                    .into(),
            });
        }
        // The Go service's rate limit counts when ours is unset; it is on
        // when it says so, or when its rate is given.
        let go_enabled = self
            .rate_limit_enabled
            .unwrap_or(self.rate_limit_requests_per_minute.is_some());
        let per_minute = |rate: u32, burst: u32| RateLimitConfig {
            per_second: f64::from(rate) / 60.0,
            burst,
            max_clients: self.rate_limit_max_clients,
        };
        let rate_limit = match self.rate_limit_per_second {
            Some(rate) => (rate > 0.0).then(|| RateLimitConfig {
                per_second: rate,
                burst: self.rate_limit_burst.unwrap_or_else(|| rate.ceil() as u32),
                max_clients: self.rate_limit_max_clients,
            }),
            None => go_enabled.then(|| {
                per_minute(
                    self.rate_limit_requests_per_minute.unwrap_or(60),
                    self.rate_limit_burst
                        .or(self.rate_limit_burst_size)
                        .unwrap_or(10),
                )
            }),
        };
        let auth_enabled = self
            .rate_limit_enabled
            .unwrap_or(self.rate_limit_auth_requests_per_minute.is_some());
        let auth_rate_limit = auth_enabled.then(|| {
            per_minute(
                self.rate_limit_auth_requests_per_minute.unwrap_or(5),
                self.rate_limit_auth_burst_size.unwrap_or(2),
            )
        });
        let defaults = SecurityHeaders::default();
        Ok(GuardConfig {
            rate_limit,
            trusted_proxy_hops: self.trusted_proxy_hops,
            idempotency_key_ttl: self.idempotency_key_ttl,
            cors_allowed_origins: self.cors_allowed_origins,
            cors: CorsSettings {
                methods: self.cors_allowed_methods,
                headers: self.cors_allowed_headers,
                exposed_headers: self.cors_exposed_headers,
                allow_credentials,
                max_age: self.cors_max_age.map(Duration::from_secs),
            },
            auth_rate_limit,
            security_headers: SecurityHeaders {
                api_policy: self.security_csp,
                referrer_policy: self
                    .security_referrer_policy
                    .unwrap_or(defaults.referrer_policy),
                frame_deny: self.security_frame_deny.unwrap_or(defaults.frame_deny),
                nosniff: self
                    .security_content_type_nosniff
                    .unwrap_or(defaults.nosniff),
                permissions_policy: self.security_permissions_policy,
            },
        })
    }
}

/// An HTTP method name, uppercased.
fn parse_method(raw: &str) -> Result<String, String> {
    let method = raw.trim().to_ascii_uppercase();
    axum::http::Method::from_bytes(method.as_bytes())
        .map(|_| method.clone())
        .map_err(|_| format!("{raw:?} is not an HTTP method"))
}

/// A header name, lowercased.
fn parse_header_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_ascii_lowercase();
    axum::http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| name.clone())
        .map_err(|_| format!("{raw:?} is not a header name"))
}

/// A value a header may carry.
fn parse_header_value(raw: &str) -> Result<String, String> {
    let value = raw.trim().to_owned();
    axum::http::HeaderValue::from_str(&value)
        .map(|_| value.clone())
        .map_err(|_| "not a valid header value (visible ASCII only)".to_string())
}

/// A `RATE_LIMIT_PER_SECOND`: 0 (off), or a rate at which one token takes
/// between a nanosecond and a day.
fn parse_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw
        .trim()
        .parse()
        .map_err(|_| "expected a number of requests per second, such as 10 or 0.5".to_string())?;
    if rate == 0.0 || (rate.is_finite() && (1.0 / 86_400.0..=1e9).contains(&rate)) {
        Ok(rate)
    } else {
        Err("must be 0 (off) or between one a day (0.0000116) and 1e9".into())
    }
}

/// An `IDEMPOTENCY_KEY_TTL` from a second to a year.
fn parse_idempotency_key_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = parse_duration(raw)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(365 * 86_400)).contains(&ttl) {
        return Err("must be between 1s and 365days".into());
    }
    Ok(ttl)
}

/// One of `CORS_ALLOWED_ORIGINS`: `*`, or `http(s)://host[:port]` as a
/// browser sends it in `Origin` (no path, no trailing slash).
fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim();
    if origin == "*" {
        return Ok(origin.to_owned());
    }
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{origin:?} must start with https:// or http://, or be *"))?;
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(format!(
            "{origin:?} must be scheme://host[:port], without a path or trailing slash"
        ));
    }
    Ok(origin.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::parse;

    use super::*;

    #[test]
    fn the_go_services_rate_limit_counts_where_ours_is_unset() {
        let go = |args: &[&str]| parse(args).unwrap().guard;
        let on = go(&["--rate-limit-enabled", "true"]);
        let limit = on.rate_limit.expect("the Go service's default rate");
        assert_eq!((limit.per_second, limit.burst), (1.0, 10));
        let auth = on.auth_rate_limit.expect("its auth limit");
        assert_eq!((auth.per_second * 60.0, auth.burst), (5.0, 2));
        let rated = go(&[
            "--rate-limit-requests-per-minute",
            "120",
            "--rate-limit-burst-size",
            "7",
        ]);
        let limit = rated
            .rate_limit
            .expect("a rate without the switch turns it on");
        assert_eq!((limit.per_second, limit.burst), (2.0, 7));
        // Off when it says so; ours wins where both are set.
        let off = go(&[
            "--rate-limit-enabled",
            "false",
            "--rate-limit-requests-per-minute",
            "120",
        ]);
        assert_eq!((off.rate_limit, off.auth_rate_limit), (None, None));
        let ours = go(&[
            "--rate-limit-enabled",
            "true",
            "--rate-limit-per-second",
            "0",
        ]);
        assert_eq!(ours.rate_limit, None);
        assert!(ours.auth_rate_limit.is_some());
    }

    #[test]
    fn cors_credentials_need_listed_origins() {
        let err = crate::config::test_support::resolve_error(&[
            "--cors-allowed-origins",
            "*",
            "--cors-allow-credentials",
            "true",
        ]);
        assert!(err.to_string().contains("CORS_ALLOW_CREDENTIALS"), "{err}");
        let bad = parse(&["--cors-allowed-methods", "GET,NOT A METHOD"]);
        assert!(bad.is_err());
    }

    #[test]
    fn client_guards_are_off_by_default_and_checked_when_set() {
        let guard = parse(&[]).unwrap().guard;
        assert_eq!(guard.rate_limit, None);
        assert_eq!(guard.trusted_proxy_hops, 0);
        assert_eq!(guard.idempotency_key_ttl, Duration::from_secs(24 * 3600));
        assert!(guard.cors_allowed_origins.is_empty());

        let guard = parse(&[
            "--rate-limit-per-second",
            "0.5",
            "--trusted-proxy-hops",
            "2",
            "--cors-allowed-origins",
            "https://app.example.com,http://localhost:3000",
        ])
        .unwrap()
        .guard;
        let limit = guard.rate_limit.expect("a rate limit");
        assert_eq!(
            (limit.per_second, limit.burst),
            (0.5, 1),
            "one second's worth, at least 1"
        );
        assert_eq!(limit.max_clients, 100_000);
        assert_eq!(guard.trusted_proxy_hops, 2);
        assert_eq!(
            guard.cors_allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        let limit = parse(&["--rate-limit-per-second", "20", "--rate-limit-burst", "5"])
            .unwrap()
            .guard
            .rate_limit
            .unwrap();
        assert_eq!((limit.per_second, limit.burst), (20.0, 5));

        for (arg, variable) in [
            ("--rate-limit-per-second=-1", "RATE_LIMIT_PER_SECOND"),
            ("--rate-limit-per-second=fast", "RATE_LIMIT_PER_SECOND"),
            ("--rate-limit-burst=0", "RATE_LIMIT_BURST"),
            ("--idempotency-key-ttl=10ms", "IDEMPOTENCY_KEY_TTL"),
            ("--idempotency-key-ttl=400days", "IDEMPOTENCY_KEY_TTL"),
            ("--cors-allowed-origins=example.com", "CORS_ALLOWED_ORIGINS"),
            (
                "--cors-allowed-origins=https://example.com/",
                "CORS_ALLOWED_ORIGINS",
            ),
            (
                "--cors-allowed-origins=*,https://a.example",
                "CORS_ALLOWED_ORIGINS",
            ),
        ] {
            let err = parse(&[arg]).unwrap_err().to_string();
            assert!(err.contains(variable), "{arg}: {err}");
        }
    }
}
