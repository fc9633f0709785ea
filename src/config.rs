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

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, Parser, ValueEnum};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

/// The shortest `KAFKA_DELIVERY_TIMEOUT` accepted.
const MIN_DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);

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
    pub guard: GuardConfig,
    pub auth: crate::auth::AuthConfig,
    /// Span export (`OTEL_*`).
    pub tracing: crate::telemetry::TracingConfig,
}

/// Where the data lives, and the pool that reaches it.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub backend: DatabaseBackend,
    /// Most connections in the pool (SQLite: read connections).
    pub max_connections: u32,
    /// How long a request waits for a free connection before 503.
    pub acquire_timeout: Duration,
    /// Most writes that share one transaction (group commit).
    pub write_batch_max: u32,
    /// How long a transaction waits for more writes before it commits.
    pub write_batch_window: Duration,
}

/// The store: PostgreSQL when `DATABASE_URL` (postgres:) or `DB_HOST` is
/// set, else a SQLite file.
#[derive(Debug, Clone)]
pub enum DatabaseBackend {
    /// A SQLite file (created with its directory).
    Sqlite(PathBuf),
    Postgres(PostgresOptions),
}

/// How to reach PostgreSQL. Built directly from the `DB_*` variables, or
/// parsed from `DATABASE_URL`. Its `Debug` names the server, user and
/// database but never the password (sqlx's own `Debug` would print it).
/// Boxed: the options are large, and a configuration is moved around.
#[derive(Clone)]
pub struct PostgresOptions(Box<PgConnectOptions>);

impl PostgresOptions {
    /// The options to connect with, password included.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::clone(&self.0)
    }
}

impl From<PgConnectOptions> for PostgresOptions {
    fn from(options: PgConnectOptions) -> Self {
        Self(Box::new(options))
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("host", &self.0.get_host())
            .field("port", &self.0.get_port())
            .field("username", &self.0.get_username())
            .field("database", &self.0.get_database())
            .field("ssl_mode", &self.0.get_ssl_mode())
            .finish_non_exhaustive()
    }
}

/// The cache: Redis when `REDIS_URL` or `REDIS_HOST` is set, else
/// in-process.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `None`: the in-process cache.
    pub redis: Option<RedisConfig>,
    /// Prefix of every cache key.
    pub cache_prefix: String,
    pub cache_user_ttl: Duration,
    pub cache_event_ttl: Duration,
    /// Bytes the in-process cache may hold (keys and values).
    pub cache_memory_bytes: u64,
    pub local: LocalCacheConfig,
}

/// The in-process tier in front of Redis (real stack only; the embedded
/// stack's in-process cache is its only tier).
#[derive(Debug, Clone, Args)]
pub struct LocalCacheConfig {
    /// Real stack: longest a replica keeps a value in its in-process tier in front of Redis;
    /// the bound on staleness when an invalidation is lost (0s: no in-process tier)
    #[arg(long, env = "CACHE_LOCAL_TTL", value_name = "CACHE_LOCAL_TTL", default_value = "1s", value_parser = parse_duration)]
    pub cache_local_ttl: Duration,
}

/// How to reach Redis. `redis`'s own `Debug` of the connection leaves the
/// password out.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub connection: ConnectionInfo,
    /// Time limit of one command; slower ones are served from the store.
    pub timeout: Duration,
}

/// The bus: Kafka when `KAFKA_BROKERS` is set, else in-process; and the
/// outbox relay that feeds it.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `None`: the in-process bus.
    pub kafka: Option<KafkaConfig>,
    pub outbox_relay_enabled: bool,
    pub outbox_batch_size: u32,
    pub outbox_poll_interval: Duration,
}

/// The Kafka settings (`KAFKA_*`).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    /// Partitions of the topics created at start (existing ones are kept).
    pub partitions: i32,
    pub replication_factor: i32,
    pub linger: Duration,
    pub compression: String,
    /// How long librdkafka retries a message before reporting it failed.
    pub delivery_timeout: Duration,
    /// The longest a consumer's fetch waits at the broker for data.
    pub fetch_wait: Duration,
}

/// A value that parsed but cannot be used; each names its variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL whose scheme selects no backend.
    #[error("{variable} must start with {expected}")]
    Scheme {
        variable: &'static str,
        expected: &'static str,
    },
    /// A value the backend's client refuses. The reason never quotes the
    /// value, which may hold a password.
    #[error("{variable} is invalid: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
    #[error("{variable} must be at least {}", humantime::format_duration(*.minimum))]
    TooShort {
        variable: &'static str,
        minimum: Duration,
    },
}

impl ConfigError {
    /// The environment variable at fault.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::Scheme { variable, .. }
            | Self::Invalid { variable, .. }
            | Self::TooShort { variable, .. } => variable,
        }
    }
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
    guard: GuardArgs,
    #[command(flatten)]
    auth: crate::auth::config::AuthArgs,
    #[command(flatten)]
    tracing: crate::telemetry::config::TracingArgs,
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
    #[arg(long, env = "ADMISSION_TARGET_LATENCY", value_name = "ADMISSION_TARGET_LATENCY", default_value = "250ms",
          value_parser = parse_admission_target_latency)]
    pub admission_target_latency: Duration,

    /// Longest an API request waits for admission when its class is at its limit, before 503
    /// (0s: shed at once); the newest waiters are admitted first
    #[arg(long, env = "ADMISSION_QUEUE_TIMEOUT", value_name = "ADMISSION_QUEUE_TIMEOUT", default_value = "500ms",
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

#[derive(Debug, Args)]
#[command(
    next_help_heading = "Database (PostgreSQL when DATABASE_URL or DB_HOST is set, else SQLite)"
)]
struct DatabaseArgs {
    /// PostgreSQL URL (postgres://user:pass@host:5432/db); overrides DB_*. A sqlite: URL names a SQLite file
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true,
        value_parser = secret
    )]
    database_url: Option<SecretString>,

    /// PostgreSQL host
    #[arg(long, env = "DB_HOST", value_name = "DB_HOST")]
    db_host: Option<String>,

    /// PostgreSQL port
    #[arg(long, env = "DB_PORT", value_name = "DB_PORT", default_value_t = 5432)]
    db_port: u16,

    /// PostgreSQL user
    #[arg(
        long,
        env = "DB_USER",
        value_name = "DB_USER",
        default_value = "postgres"
    )]
    db_user: String,

    /// PostgreSQL password
    #[arg(
        long,
        env = "DB_PASSWORD",
        value_name = "DB_PASSWORD",
        default_value = "postgres",
        hide_env_values = true,
        value_parser = secret
    )]
    db_password: SecretString,

    /// PostgreSQL database
    #[arg(
        long,
        env = "DB_NAME",
        value_name = "DB_NAME",
        default_value = "highload_db"
    )]
    db_name: String,

    /// PostgreSQL TLS mode
    #[arg(long, env = "DB_SSLMODE", value_name = "DB_SSLMODE", default_value = "disable",
          value_parser = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])]
    db_sslmode: String,

    /// Most connections in the pool (SQLite: read connections)
    #[arg(long, env = "DB_MAX_CONNECTIONS", value_name = "DB_MAX_CONNECTIONS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    db_max_connections: u32,

    /// How long a request waits for a free connection before 503
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", value_name = "DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    db_acquire_timeout: Duration,

    /// Most concurrent writes that share one transaction (group commit)
    #[arg(long, env = "WRITE_BATCH_MAX", value_name = "WRITE_BATCH_MAX", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    write_batch_max: u32,

    /// How long a transaction waits for more writes before it commits (0s: it takes the writes waiting and commits at once)
    #[arg(long, env = "WRITE_BATCH_WINDOW", value_name = "WRITE_BATCH_WINDOW", default_value = "0s", value_parser = parse_duration)]
    write_batch_window: Duration,

    /// SQLite database file, used when no PostgreSQL is configured (created with its directory)
    #[arg(
        long,
        env = "SQLITE_PATH",
        value_name = "SQLITE_PATH",
        default_value = "./data/highload.db"
    )]
    sqlite_path: PathBuf,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Cache (Redis when REDIS_URL or REDIS_HOST is set, else in-process)")]
struct CacheArgs {
    /// Redis URL (redis://:password@host:6379/0); overrides REDIS_*
    #[arg(
        long,
        env = "REDIS_URL",
        value_name = "REDIS_URL",
        hide_env_values = true,
        value_parser = secret
    )]
    redis_url: Option<SecretString>,

    /// Redis host
    #[arg(long, env = "REDIS_HOST", value_name = "REDIS_HOST")]
    redis_host: Option<String>,

    /// Redis port
    #[arg(
        long,
        env = "REDIS_PORT",
        value_name = "REDIS_PORT",
        default_value_t = 6379
    )]
    redis_port: u16,

    /// Redis password (empty: none)
    #[arg(
        long,
        env = "REDIS_PASSWORD",
        value_name = "REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true,
        value_parser = secret
    )]
    redis_password: SecretString,

    /// Redis database number
    #[arg(long, env = "REDIS_DB", value_name = "REDIS_DB", default_value_t = 0)]
    redis_db: u32,

    /// Prefix of every cache key (share one Redis between deployments)
    #[arg(
        long,
        env = "CACHE_PREFIX",
        value_name = "CACHE_PREFIX",
        default_value = ""
    )]
    cache_prefix: String,

    /// How long a user stays cached
    #[arg(long, env = "CACHE_USER_TTL", value_name = "CACHE_USER_TTL", default_value = "1h", value_parser = parse_duration)]
    cache_user_ttl: Duration,

    /// How long an event stays cached
    #[arg(long, env = "CACHE_EVENT_TTL", value_name = "CACHE_EVENT_TTL", default_value = "30m", value_parser = parse_duration)]
    cache_event_ttl: Duration,

    /// Time limit of one Redis command; slower ones are served from the store
    #[arg(long, env = "CACHE_TIMEOUT", value_name = "CACHE_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    cache_timeout: Duration,

    /// Bytes the in-process cache may hold, keys and values (least recently used go first)
    #[arg(
        long,
        env = "CACHE_MEMORY_BYTES",
        value_name = "CACHE_MEMORY_BYTES",
        default_value_t = 8 << 20
    )]
    cache_memory_bytes: u64,

    #[command(flatten)]
    local: LocalCacheConfig,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Bus (Kafka when KAFKA_BROKERS is set, else in-process)")]
struct BusArgs {
    /// Kafka bootstrap servers, comma-separated (host:9092,host2:9092)
    #[arg(long, env = "KAFKA_BROKERS", value_name = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,

    /// Topic of the event messages (the dead-letter topic is <topic>.dlq)
    #[arg(
        long,
        env = "KAFKA_TOPIC",
        value_name = "KAFKA_TOPIC",
        default_value = "user-events"
    )]
    kafka_topic: String,

    /// Consumer group of the workers
    #[arg(
        long,
        env = "KAFKA_GROUP_ID",
        value_name = "KAFKA_GROUP_ID",
        default_value = "highload-service"
    )]
    kafka_group_id: String,

    /// Partitions of the topics created at start (existing topics keep theirs)
    #[arg(long, env = "KAFKA_PARTITIONS", value_name = "KAFKA_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    kafka_partitions: i32,

    /// Replication factor of the topics created at start
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", value_name = "KAFKA_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=100))]
    kafka_replication_factor: i32,

    /// How long the producer waits to batch messages
    #[arg(long, env = "KAFKA_LINGER", value_name = "KAFKA_LINGER", default_value = "5ms", value_parser = parse_duration)]
    kafka_linger: Duration,

    /// Compression of produced batches
    #[arg(long, env = "KAFKA_COMPRESSION", value_name = "KAFKA_COMPRESSION", default_value = "lz4",
          value_parser = ["none", "gzip", "snappy", "lz4"])]
    kafka_compression: String,

    /// How long a message is retried before its publish counts as failed (the outbox keeps it)
    #[arg(long, env = "KAFKA_DELIVERY_TIMEOUT", value_name = "KAFKA_DELIVERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    kafka_delivery_timeout: Duration,

    /// Longest a consumer's fetch waits at the broker for new messages: an upper bound on the latency it adds
    #[arg(long, env = "KAFKA_FETCH_WAIT", value_name = "KAFKA_FETCH_WAIT", default_value = "10ms", value_parser = parse_duration)]
    kafka_fetch_wait: Duration,

    /// Run the outbox relay in this process (false: API-only replica; another one relays)
    #[arg(long, env = "OUTBOX_RELAY_ENABLED", value_name = "OUTBOX_RELAY_ENABLED", default_value = "true",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    outbox_relay_enabled: bool,

    /// Outbox rows published per batch
    #[arg(long, env = "OUTBOX_BATCH_SIZE", value_name = "OUTBOX_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    outbox_batch_size: u32,

    /// How often the relay looks for rows written by other replicas
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", value_name = "OUTBOX_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    outbox_poll_interval: Duration,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Workers")]
pub struct WorkerConfig {
    /// Workers processing consumed events in parallel
    #[arg(long, env = "WORKER_COUNT", value_name = "WORKER_COUNT", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_count: u32,

    /// Events queued for the workers; when full, consumption pauses
    #[arg(long, env = "WORKER_QUEUE_CAPACITY", value_name = "WORKER_QUEUE_CAPACITY", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub worker_queue_capacity: u32,

    /// Attempts at processing an event before it goes to the dead-letter topic
    #[arg(long, env = "PROCESSING_MAX_ATTEMPTS", value_name = "PROCESSING_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub processing_max_attempts: u32,

    /// Pause before the second attempt; it doubles with each further one
    #[arg(long, env = "PROCESSING_RETRY_DELAY", value_name = "PROCESSING_RETRY_DELAY", default_value = "200ms", value_parser = parse_duration)]
    pub processing_retry_delay: Duration,
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
            database: self.database.resolve()?,
            cache: self.cache.resolve()?,
            bus: self.bus.resolve()?,
            workers: self.workers,
            log: self.log,
            guard: self.guard.resolve()?,
            auth: self.auth.resolve()?,
            tracing: self.tracing.resolve()?,
        })
    }
}

impl DatabaseArgs {
    fn resolve(self) -> Result<DatabaseConfig, ConfigError> {
        let backend = match (&self.database_url, &self.db_host) {
            (Some(url), _) => database_url_backend(url.expose_secret())?,
            (None, Some(host)) => {
                let ssl_mode = self
                    .db_sslmode
                    .parse()
                    .map_err(|err| ConfigError::Invalid {
                        variable: "DB_SSLMODE",
                        reason: format!("{err}"),
                    })?;
                // Built field by field: no URL to encode, so any character
                // works in the user, password and database name.
                let options = PgConnectOptions::new_without_pgpass()
                    .host(host)
                    .port(self.db_port)
                    .username(&self.db_user)
                    .password(self.db_password.expose_secret())
                    .database(&self.db_name)
                    .ssl_mode(ssl_mode);
                DatabaseBackend::Postgres(options.into())
            }
            (None, None) => DatabaseBackend::Sqlite(self.sqlite_path),
        };
        Ok(DatabaseConfig {
            backend,
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            write_batch_max: self.write_batch_max,
            write_batch_window: self.write_batch_window,
        })
    }
}

/// `DATABASE_URL`: a `sqlite:` path or a PostgreSQL URL.
fn database_url_backend(url: &str) -> Result<DatabaseBackend, ConfigError> {
    const VARIABLE: &str = "DATABASE_URL";
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(DatabaseBackend::Sqlite(PathBuf::from(path)));
    }
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(ConfigError::Scheme {
            variable: VARIABLE,
            expected: "postgres://, postgresql:// or sqlite:",
        });
    }
    // sqlx's parse errors name the part at fault, not the URL.
    let options: PgConnectOptions = url.parse().map_err(|err| ConfigError::Invalid {
        variable: VARIABLE,
        reason: format!("{err}"),
    })?;
    Ok(DatabaseBackend::Postgres(options.into()))
}

impl CacheArgs {
    fn resolve(self) -> Result<CacheConfig, ConfigError> {
        let connection = match (&self.redis_url, &self.redis_host) {
            (Some(url), _) => Some(redis_url_connection(url.expose_secret())?),
            (None, Some(host)) => {
                let invalid = |err: redis::RedisError| ConfigError::Invalid {
                    variable: "REDIS_HOST",
                    reason: format!("{err}"),
                };
                let connection = (host.as_str(), self.redis_port)
                    .into_connection_info()
                    .map_err(invalid)?;
                let mut settings = RedisConnectionInfo::default().set_db(self.redis_db.into());
                // Empty means no password, as in the Go service.
                let password = self.redis_password.expose_secret();
                if !password.is_empty() {
                    settings = settings.set_password(password);
                }
                Some(connection.set_redis_settings(settings))
            }
            (None, None) => None,
        };
        Ok(CacheConfig {
            redis: connection.map(|connection| RedisConfig {
                connection,
                timeout: self.cache_timeout,
            }),
            cache_prefix: self.cache_prefix,
            cache_user_ttl: self.cache_user_ttl,
            cache_event_ttl: self.cache_event_ttl,
            cache_memory_bytes: self.cache_memory_bytes,
            local: self.local,
        })
    }
}

/// `REDIS_URL`: `redis://` or `rediss://`.
fn redis_url_connection(url: &str) -> Result<ConnectionInfo, ConfigError> {
    const VARIABLE: &str = "REDIS_URL";
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(ConfigError::Scheme {
            variable: VARIABLE,
            expected: "redis:// or rediss://",
        });
    }
    // The client's parse errors say what is wrong, not the URL.
    url.into_connection_info()
        .map_err(|err| ConfigError::Invalid {
            variable: VARIABLE,
            reason: format!("{err}"),
        })
}

impl BusArgs {
    fn resolve(self) -> Result<BusConfig, ConfigError> {
        // Checked even without Kafka, so that a bad value is found before
        // the day KAFKA_BROKERS is set.
        if self.kafka_delivery_timeout < MIN_DELIVERY_TIMEOUT {
            return Err(ConfigError::TooShort {
                variable: "KAFKA_DELIVERY_TIMEOUT",
                minimum: MIN_DELIVERY_TIMEOUT,
            });
        }
        Ok(BusConfig {
            kafka: self.kafka_brokers.map(|brokers| KafkaConfig {
                brokers,
                topic: self.kafka_topic,
                group_id: self.kafka_group_id,
                partitions: self.kafka_partitions,
                replication_factor: self.kafka_replication_factor,
                linger: self.kafka_linger,
                compression: self.kafka_compression,
                delivery_timeout: self.kafka_delivery_timeout,
                fetch_wait: self.kafka_fetch_wait,
            }),
            outbox_relay_enabled: self.outbox_relay_enabled,
            outbox_batch_size: self.outbox_batch_size,
            outbox_poll_interval: self.outbox_poll_interval,
        })
    }
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

/// Holds a password (or a URL that may contain one) so that `Debug` shows
/// `[REDACTED]`.
fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|err| format!("{err} (expected a duration such as 500ms, 30s, 5m, 1h)"))
}

/// Bytes, or a number with KiB/MiB (×1024) or KB/MB (×1000).
fn parse_size(raw: &str) -> Result<usize, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let value: usize = digits
        .parse()
        .map_err(|_| "expected a size such as 1048576, 512KiB or 1MiB".to_string())?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "kb" => 1000,
        "m" | "mib" => 1024 * 1024,
        "mb" => 1_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use KiB, MiB, KB or MB"
            ));
        }
    };
    value
        .checked_mul(multiplier)
        .filter(|v| *v > 0)
        .ok_or_else(|| "size must be positive and fit in memory".to_string())
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

#[cfg(test)]
mod tests {
    use redis::ConnectionAddr;
    use sqlx::postgres::PgSslMode;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
    }

    /// The error resolving `args` reports (parsing must succeed).
    fn resolve_error(args: &[&str]) -> ConfigError {
        Cli::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
            .expect("arguments parse")
            .resolve()
            .expect_err("resolving fails")
    }

    fn postgres(config: &Config) -> PgConnectOptions {
        match &config.database.backend {
            DatabaseBackend::Postgres(options) => options.connect_options(),
            other => panic!("expected PostgreSQL, got {other:?}"),
        }
    }

    fn redis(config: &Config) -> &ConnectionInfo {
        &config.cache.redis.as_ref().expect("Redis").connection
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
    fn db_host_selects_postgres_with_go_defaults() {
        let config = parse(&["--db-host", "db.internal", "--db-password", "p@ss word"]).unwrap();
        let options = postgres(&config);
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 5432);
        assert_eq!(options.get_username(), "postgres");
        assert_eq!(options.get_database(), Some("highload_db"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Disable));
        // sqlx has no getter for it; its own Debug shows what it will send.
        assert!(
            format!("{options:?}").contains("p@ss word"),
            "the password reaches the connection as given"
        );
    }

    #[test]
    fn db_variables_keep_characters_a_url_would_need_encoded() {
        let config = parse(&[
            "--db-host",
            "db",
            "--db-port",
            "6432",
            "--db-user",
            "app/user",
            "--db-name",
            "my db",
            "--db-sslmode",
            "verify-full",
        ])
        .unwrap();
        let options = postgres(&config);
        assert_eq!(options.get_port(), 6432);
        assert_eq!(options.get_username(), "app/user");
        assert_eq!(options.get_database(), Some("my db"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
    }

    #[test]
    fn database_url_wins_and_its_scheme_is_checked() {
        let config = parse(&["--database-url", "sqlite:/tmp/x.db", "--db-host", "h"]).unwrap();
        assert!(
            matches!(&config.database.backend, DatabaseBackend::Sqlite(path)
                if path.as_path() == std::path::Path::new("/tmp/x.db")),
            "{:?}",
            config.database.backend
        );
        let config = parse(&[
            "--database-url",
            "postgresql://app@pg.internal:5433/orders",
            "--db-host",
            "ignored",
        ])
        .unwrap();
        let options = postgres(&config);
        assert_eq!(options.get_host(), "pg.internal");
        assert_eq!(options.get_port(), 5433);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("orders"));

        let err = resolve_error(&["--database-url", "mysql://x"]);
        assert_eq!(err.variable(), "DATABASE_URL");
        assert!(
            err.to_string().starts_with("DATABASE_URL must start with"),
            "{err}"
        );
        let err = resolve_error(&["--database-url", "postgres://app:hunter2@db:port/x"]);
        assert_eq!(err.variable(), "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
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
    fn redis_host_builds_a_connection_with_go_defaults() {
        let config = parse(&["--redis-host", "cache", "--redis-password", "s3:cret"]).unwrap();
        let connection = redis(&config);
        assert_eq!(
            connection.addr(),
            &ConnectionAddr::Tcp("cache".into(), 6379)
        );
        assert_eq!(connection.redis_settings().db(), 0);
        assert_eq!(connection.redis_settings().password(), Some("s3:cret"));
        assert_eq!(
            config.cache.redis.as_ref().unwrap().timeout,
            Duration::from_millis(250)
        );

        let config = parse(&["--redis-host", "cache", "--redis-db", "3"]).unwrap();
        assert_eq!(
            redis(&config).redis_settings().password(),
            None,
            "empty: none"
        );
        assert_eq!(redis(&config).redis_settings().db(), 3);
        assert!(parse(&[]).unwrap().cache.redis.is_none());
    }

    #[test]
    fn redis_url_wins_and_its_scheme_is_checked() {
        let config = parse(&[
            "--redis-url",
            "redis://:pw@r.internal:6380/2",
            "--redis-host",
            "ignored",
        ])
        .unwrap();
        let connection = redis(&config);
        assert_eq!(
            connection.addr(),
            &ConnectionAddr::Tcp("r.internal".into(), 6380)
        );
        assert_eq!(connection.redis_settings().db(), 2);
        assert_eq!(connection.redis_settings().password(), Some("pw"));

        let err = resolve_error(&["--redis-url", "http://cache"]);
        assert_eq!(err.variable(), "REDIS_URL");
        assert_eq!(
            err.to_string(),
            "REDIS_URL must start with redis:// or rediss://"
        );
    }

    #[test]
    fn kafka_brokers_select_kafka_with_its_settings() {
        let config = parse(&["--kafka-brokers", "k1:9092,k2:9092"]).unwrap();
        let kafka = config.bus.kafka.expect("Kafka");
        assert_eq!(kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(kafka.topic, "user-events");
        assert_eq!(kafka.group_id, "highload-service");
        assert_eq!(kafka.partitions, 6);
        assert_eq!(kafka.compression, "lz4");
        assert_eq!(kafka.delivery_timeout, Duration::from_secs(30));
        assert_eq!(kafka.fetch_wait, Duration::from_millis(10));

        let err = resolve_error(&["--kafka-delivery-timeout", "500ms"]);
        assert_eq!(err.variable(), "KAFKA_DELIVERY_TIMEOUT");
        assert_eq!(
            err.to_string(),
            "KAFKA_DELIVERY_TIMEOUT must be at least 1s"
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

    #[test]
    fn sizes_and_levels_parse_like_their_docs_say() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GiB").is_err());
        assert_eq!(parse_log_level("warning").unwrap(), "warn");
        assert_eq!(
            parse_log_level("info,highload=debug").unwrap(),
            "info,highload=debug"
        );
    }
}
