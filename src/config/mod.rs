//! Typed configuration from the environment (and `.env`), with a command
//! line flag for every variable.
//!
//! Names and defaults are the Go service's, so its `env.example` works
//! unchanged. One exception: `DB_HOST`, `REDIS_HOST` and `KAFKA_BROKERS`
//! (and the URL forms) have no default, because unset means "use the
//! embedded backend". As in the Go service, a variable set to the empty
//! string counts as unset. A bad value stops start-up with a message naming
//! the variable.
//!
//! The command line is parsed into [`Cli`] and resolved once, at load, into
//! [`Config`]: which store, whether Redis, whether Kafka, each with the
//! options its client needs. Nothing later chooses a backend or parses a
//! URL again. Passwords (`DB_PASSWORD`, `REDIS_PASSWORD`, and those inside
//! `DATABASE_URL` and `REDIS_URL`) are held in types whose `Debug` leaves
//! them out, so logging a configuration never leaks one.

pub(crate) mod bus;
pub(crate) mod cache;
pub(crate) mod database;
pub(crate) mod error;
pub(crate) mod kafka_security;
pub(crate) mod parse;
pub(crate) mod worker;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, Parser, ValueEnum};

use bus::BusArgs;
pub use bus::{BusConfig, KafkaConfig};
use cache::{CacheArgs, RedisTlsArgs};
pub use cache::{CacheConfig, LocalCacheConfig, RedisConfig};
use database::{DatabaseArgs, PostgresTlsArgs};
pub use database::{DatabaseBackend, DatabaseConfig, PostgresOptions};
pub use error::ConfigError;
use kafka_security::KafkaSecurityArgs;
pub use kafka_security::{
    KafkaSasl, KafkaSaslMechanism, KafkaSecurity, KafkaSecurityProtocol, KafkaSslClient,
};
use parse::{parse_duration, parse_positive_duration, parse_size};
pub use worker::WorkerConfig;

/// The service's settings, resolved: every backend chosen and ready to
/// connect to. Built by [`Config::load`] (or [`Config::try_parse_from`]).
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub bus: BusConfig,
    pub workers: WorkerConfig,
    pub log: LogConfig,
    pub listener: ListenerConfig,
    pub guard: GuardConfig,
    pub auth: crate::auth::AuthConfig,
    /// Span export (`OTEL_*`).
    pub tracing: crate::telemetry::TracingConfig,
}

/// What the environment and the command line say, before the backends are
/// chosen. Its doc comments are `--help`.
#[derive(Debug, Parser)]
#[command(
    name = "highload",
    version,
    about = "Users and events REST service: PostgreSQL or SQLite, Redis or in-process cache, \
             Kafka or in-process bus.",
    long_about = "Users and events REST service.\n\n\
        With no configuration it serves the whole API on embedded backends (SQLite file, \
        in-process cache and bus). Setting DATABASE_URL or DB_HOST selects PostgreSQL, \
        REDIS_URL or REDIS_HOST selects Redis, KAFKA_BROKERS selects Kafka.\n\n\
        Every setting is read from the environment variable shown (or a .env file in the \
        working directory); a flag of the same name overrides it.",
    after_help = "Also: `highload healthcheck [--ready]` asks the service running on this host for \
        /health/live (or /health/ready) and exits 0 on a 200, 1 otherwise (the container \
        image's health check)."
)]
struct Cli {
    #[command(flatten)]
    server: ServerConfig,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    workers: WorkerConfig,
    #[command(flatten)]
    log: LogConfig,
    #[command(flatten)]
    listener: ListenerArgs,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    auth: crate::auth::config::AuthArgs,
    #[command(flatten)]
    tracing: crate::telemetry::config::TracingArgs,
    #[command(flatten)]
    tls: BackendTlsArgs,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerConfig {
    /// Address to listen on
    #[arg(
        long,
        env = "SERVER_HOST",
        value_name = "SERVER_HOST",
        default_value = "0.0.0.0"
    )]
    pub server_host: String,

    /// Port to listen on (0 picks a free one)
    #[arg(
        long,
        env = "SERVER_PORT",
        value_name = "SERVER_PORT",
        default_value_t = 8080
    )]
    pub server_port: u16,

    /// Largest request body accepted; larger ones get 413 (bytes, or with KiB/MiB/KB/MB)
    #[arg(long, env = "HTTP_BODY_LIMIT", value_name = "HTTP_BODY_LIMIT", default_value = "1MiB", value_parser = parse_size)]
    pub http_body_limit: usize,

    /// Time limit of one request; slower ones get 503
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", value_name = "HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_request_timeout: Duration,

    /// Most API requests of a class (reads, writes) handled at once: the ceiling of the adaptive limit
    /// (see ADMISSION_*); four times as many may wait for admission
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT", value_name = "HTTP_MAX_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_in_flight: u32,

    #[command(flatten)]
    pub admission: AdmissionConfig,

    /// Time allowed for a graceful shutdown (drain requests, outbox and workers)
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How often the dependencies behind /health are checked, in the background; /health reports the
    /// latest results, so callers never add checks (at least 100ms)
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", value_name = "HEALTH_CHECK_INTERVAL", default_value = "2s",
          value_parser = parse_health_check_interval)]
    pub health_check_interval: Duration,

    /// Show in /health each failed check's whole error (which may hold addresses and operating-system
    /// errors) instead of a generic reason; the whole error is logged either way
    #[arg(long, env = "HEALTH_DETAIL", value_name = "HEALTH_DETAIL", default_value = "false",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub health_detail: bool,
}

/// Admission control of the API: each class of requests (reads, writes)
/// admits as many at once as its backends serve within a target latency.
#[derive(Debug, Clone, Copy, Args)]
#[command(next_help_heading = "Admission control")]
pub struct AdmissionConfig {
    /// API latency above which a class (reads, writes) admits fewer requests at once; below it, more
    /// (raise it when the database is far enough that one write takes close to it)
    #[arg(long, env = "ADMISSION_TARGET_LATENCY", value_name = "ADMISSION_TARGET_LATENCY", default_value = "100ms",
          value_parser = parse_admission_target_latency)]
    pub admission_target_latency: Duration,

    /// Longest an API request waits for admission when its class is at its limit, before 503
    /// (0s: shed at once); once the oldest has waited the target latency, the newest are admitted first
    #[arg(long, env = "ADMISSION_QUEUE_TIMEOUT", value_name = "ADMISSION_QUEUE_TIMEOUT", default_value = "1s",
          value_parser = parse_duration)]
    pub admission_queue_timeout: Duration,
}

/// An `ADMISSION_TARGET_LATENCY`: zero would shrink every limit to its
/// minimum.
fn parse_admission_target_latency(raw: &str) -> Result<Duration, String> {
    const MINIMUM: Duration = Duration::from_millis(1);
    let target = parse_duration(raw)?;
    if target < MINIMUM {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MINIMUM)
        ));
    }
    Ok(target)
}

/// A `HEALTH_CHECK_INTERVAL`: a shorter one would probe the dependencies
/// almost continuously.
fn parse_health_check_interval(raw: &str) -> Result<Duration, String> {
    const MINIMUM: Duration = Duration::from_millis(100);
    let interval = parse_duration(raw)?;
    if interval < MINIMUM {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MINIMUM)
        ));
    }
    Ok(interval)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Pretty,
    /// One JSON object per line
    Json,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogConfig {
    /// Level (error, warn, info, debug, trace) or a tracing filter such as "info,highload=debug"
    #[arg(long, env = "LOG_LEVEL", value_name = "LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log line format
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// The HTTP listener: how long a connection may keep a slot without a
/// request in progress, how many connections it may hold, and HTTPS.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// From accepting a connection, or from the first byte of a later
    /// request, to the end of the request's head (TLS handshake included).
    pub header_read_timeout: Duration,
    /// Between requests on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Connections held at once; `None`: derived from the open-file limit.
    pub max_connections: Option<u32>,
    /// `None`: plain HTTP.
    pub tls: Option<ListenerTlsConfig>,
}

/// The listener's certificate: PEM files, read again when they change.
#[derive(Debug, Clone)]
pub struct ListenerTlsConfig {
    /// The certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for a change.
    pub reload_interval: Duration,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP listener")]
struct ListenerArgs {
    /// Time a client has to send a request's head, from connecting (TLS handshake included) or from
    /// the first byte of a later request; slower connections are closed
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT", value_name = "HTTP_HEADER_READ_TIMEOUT", default_value = "10s",
          value_parser = parse_positive_duration)]
    http_header_read_timeout: Duration,

    /// Time a keep-alive connection may wait for its next request before it is closed (keep it above
    /// the idle timeout of a load balancer in front, often 60s)
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", value_name = "HTTP_IDLE_TIMEOUT", default_value = "75s",
          value_parser = parse_positive_duration)]
    http_idle_timeout: Duration,

    /// Connections held at once; more wait in the listen backlog until one closes (default: three
    /// quarters of the open-file limit, 768 of 1024, leaving the rest to pools and files)
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", value_name = "HTTP_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    http_max_connections: Option<u32>,

    /// Certificate chain (PEM) to serve HTTPS with; needs SERVER_TLS_KEY_FILE (unset: plain HTTP)
    #[arg(
        long,
        env = "SERVER_TLS_CERT_FILE",
        value_name = "SERVER_TLS_CERT_FILE"
    )]
    server_tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of SERVER_TLS_CERT_FILE
    #[arg(long, env = "SERVER_TLS_KEY_FILE", value_name = "SERVER_TLS_KEY_FILE")]
    server_tls_key_file: Option<PathBuf>,

    /// How often the certificate and key files are checked for a change; a changed pair is loaded
    /// for new connections, a bad one is logged and the previous one kept
    #[arg(long, env = "SERVER_TLS_RELOAD_INTERVAL", value_name = "SERVER_TLS_RELOAD_INTERVAL", default_value = "10s",
          value_parser = parse_positive_duration)]
    server_tls_reload_interval: Duration,
}

impl ListenerArgs {
    fn resolve(self) -> Result<ListenerConfig, ConfigError> {
        let tls = match (self.server_tls_cert_file, self.server_tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(ListenerTlsConfig {
                cert_file,
                key_file,
                reload_interval: self.server_tls_reload_interval,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    variable: "SERVER_TLS_KEY_FILE",
                    reason: "must be set with SERVER_TLS_CERT_FILE".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    variable: "SERVER_TLS_CERT_FILE",
                    reason: "must be set with SERVER_TLS_KEY_FILE".into(),
                });
            }
        };
        Ok(ListenerConfig {
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections,
            tls,
        })
    }
}

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
struct GuardArgs {
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
    fn resolve(self) -> Result<GuardConfig, ConfigError> {
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

impl Config {
    /// Reads `.env` (if present) and the environment, then the command line,
    /// and resolves them. On a bad value, prints which variable is wrong and
    /// exits.
    pub fn load() -> Self {
        read_dotenv();
        match Cli::parse().resolve() {
            Ok(config) => config,
            Err(err) => Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, err)
                .exit(),
        }
    }

    /// As [`Config::load`], with the subcommands `S` beside the settings:
    /// `None` when the command line names none.
    pub fn load_with<S: clap::Subcommand>() -> (Self, Option<S>) {
        use clap::FromArgMatches;
        read_dotenv();
        let mut command = S::augment_subcommands(Cli::command());
        let mut matches = command.clone().get_matches();
        let parsed = Cli::from_arg_matches_mut(&mut matches).and_then(|cli| {
            let subcommand = match matches.subcommand_name() {
                Some(_) => Some(S::from_arg_matches_mut(&mut matches)?),
                None => None,
            };
            Ok((cli, subcommand))
        });
        let (cli, subcommand) = parsed.unwrap_or_else(|err| err.format(&mut command).exit());
        match cli.resolve() {
            Ok(config) => (config, subcommand),
            Err(err) => command
                .error(clap::error::ErrorKind::ValueValidation, err)
                .exit(),
        }
    }
}

/// Loads `.env` into the environment, then drops empty variables.
fn read_dotenv() {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(err) if err.not_found() => {}
        Err(err) => clap::Error::raw(
            clap::error::ErrorKind::Io,
            format!("failed to read .env: {err}\n"),
        )
        .exit(),
    }
    unset_empty_variables();
}

impl Config {
    /// Parses `args` (the program name first) and the environment, then
    /// resolves them; an error names the variable, as at start-up.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Cli::try_parse_from(args)?
            .resolve()
            .map_err(|err| Cli::command().error(clap::error::ErrorKind::ValueValidation, err))
    }
}

impl Cli {
    /// Chooses the backends and builds what connects to them; the single
    /// place where settings are checked against each other.
    fn resolve(self) -> Result<Config, ConfigError> {
        Ok(Config {
            server: self.server,
            database: self.database.resolve(&self.tls.postgres)?,
            cache: self.cache.resolve(&self.tls.redis)?,
            bus: self.bus.resolve(self.tls.kafka)?,
            workers: self.workers,
            log: self.log,
            listener: self.listener.resolve()?,
            guard: self.guard.resolve()?,
            auth: self.auth.resolve()?,
            tracing: self.tracing.resolve()?,
        })
    }
}

// TLS to the backends, and Kafka's SASL. Each backend's settings are applied
// to its connection while it is resolved above, and only when that backend
// is configured: its files are read then, so a missing one stops start-up
// with its variable named.

/// TLS to each backend (and Kafka's SASL), one help heading per backend.
#[derive(Debug, Args)]
struct BackendTlsArgs {
    #[command(flatten)]
    postgres: PostgresTlsArgs,
    #[command(flatten)]
    redis: RedisTlsArgs,
    #[command(flatten)]
    kafka: KafkaSecurityArgs,
}

/// Go's `getEnv` treats an empty variable as unset (`REDIS_PASSWORD=` in its
/// env.example); so do we, for the variables we read.
fn unset_empty_variables() {
    let command = Cli::command();
    for name in command.get_arguments().filter_map(|arg| arg.get_env()) {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // SAFETY: called from `main` before the runtime starts any thread,
            // so nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
}

/// Accepts Go's level names (`warning`, `fatal`) besides tracing filters.
fn parse_log_level(raw: &str) -> Result<String, String> {
    let filter = match raw.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "fatal" | "panic" => "error".to_owned(),
        _ => raw.trim().to_owned(),
    };
    tracing_subscriber::EnvFilter::try_new(&filter)
        .map(|_| filter)
        .map_err(|err| format!("{err} (expected error, warn, info, debug or trace)"))
}

/// What the settings' tests share: a command line parsed and resolved,
/// and TLS files to name in it.
#[cfg(test)]
mod test_support {
    use super::{Cli, Config, ConfigError};
    use clap::Parser;

    pub(super) fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
    }

    /// The error resolving `args` reports (parsing must succeed).
    pub(super) fn resolve_error(args: &[&str]) -> ConfigError {
        Cli::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
            .expect("arguments parse")
            .resolve()
            .expect_err("resolving fails")
    }

    /// A CA and a certificate with its key (for `localhost`), as PEM files.
    pub(super) struct TlsFiles {
        pub(super) dir: tempfile::TempDir,
        pub(super) ca: String,
        pub(super) cert: String,
        pub(super) key: String,
    }

    pub(super) fn tls_files() -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::new(ca_params, &ca_key))
            .unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_str().unwrap().to_owned()
        };
        TlsFiles {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::parse;
    use super::*;

    #[test]
    fn levels_parse_like_their_docs_say() {
        assert_eq!(parse_log_level("warning").unwrap(), "warn");
        assert_eq!(
            parse_log_level("info,highload=debug").unwrap(),
            "info,highload=debug"
        );
    }

    #[test]
    fn defaults_select_the_embedded_stack_on_port_8080() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.server.server_port, 8080);
        assert_eq!(config.server.server_host, "0.0.0.0");
        assert!(
            matches!(&config.database.backend, DatabaseBackend::Sqlite(path)
                if path.as_path() == std::path::Path::new("./data/highload.db")),
            "{:?}",
            config.database.backend
        );
        assert!(config.cache.redis.is_none(), "in-process cache");
        assert!(config.bus.kafka.is_none(), "in-process bus");
        assert_eq!(config.database.max_connections, 20);
        assert_eq!(config.workers.worker_count, 10);
        assert_eq!(config.cache.cache_user_ttl, Duration::from_secs(3600));
        assert_eq!(config.cache.cache_event_ttl, Duration::from_secs(1800));
        assert_eq!(config.cache.cache_memory_bytes, 8 << 20);
        assert_eq!(config.cache.local.cache_local_ttl, Duration::from_secs(1));
        assert_eq!(config.server.http_body_limit, 1024 * 1024);
    }

    #[test]
    fn debug_of_the_config_never_shows_a_password() {
        let cases: [(&[&str], &str); 4] = [
            (&["--db-host", "db", "--db-password", "pw-one"], "pw-one"),
            (
                &["--database-url", "postgres://app:pw-two@db:5432/x"],
                "pw-two",
            ),
            (
                &["--redis-host", "cache", "--redis-password", "pw-three"],
                "pw-three",
            ),
            (&["--redis-url", "redis://:pw-four@cache:6379/0"], "pw-four"),
        ];
        for (args, secret) in cases {
            let cli = Cli::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
                .unwrap();
            assert!(
                !format!("{cli:?}").contains(secret),
                "{secret} in the arguments"
            );
            let config = cli.resolve().unwrap();
            let debug = format!("{config:?} {config:#?}");
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        // The backend is still described, server and user named.
        let config = parse(&["--database-url", "postgres://app:pw@db.example:5432/x"]).unwrap();
        let debug = format!("{config:?}");
        assert!(
            debug.contains("db.example") && debug.contains("app"),
            "{debug}"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = parse(&["--server-port", "http"]).unwrap_err().to_string();
        assert!(err.contains("SERVER_PORT"), "{err}");
        let err = parse(&["--worker-count", "0"]).unwrap_err().to_string();
        assert!(err.contains("WORKER_COUNT"), "{err}");
        let err = parse(&["--shutdown-timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHUTDOWN_TIMEOUT"), "{err}");
        let err = parse(&["--log-level", "loud=["]).unwrap_err().to_string();
        assert!(err.contains("LOG_LEVEL"), "{err}");
        let err = parse(&["--database-url", "mysql://x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
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
