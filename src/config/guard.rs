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
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", value_name = "RATE_LIMIT_PER_SECOND", default_value = "0",
          value_parser = parse_rate)]
    rate_limit_per_second: f64,

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
        let rate_limit = (self.rate_limit_per_second > 0.0).then(|| RateLimitConfig {
            per_second: self.rate_limit_per_second,
            burst: self
                .rate_limit_burst
                .unwrap_or_else(|| self.rate_limit_per_second.ceil() as u32),
            max_clients: self.rate_limit_max_clients,
        });
        Ok(GuardConfig {
            rate_limit,
            trusted_proxy_hops: self.trusted_proxy_hops,
            idempotency_key_ttl: self.idempotency_key_ttl,
            cors_allowed_origins: self.cors_allowed_origins,
        })
    }
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
