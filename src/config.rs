//! Typed configuration from the environment (and `.env`), with a command
//! line flag for every variable.
//!
//! Names and defaults are the Go service's, so its `env.example` works
//! unchanged. One exception: `DB_HOST`, `REDIS_HOST` and `KAFKA_BROKERS`
//! (and the URL forms) have no default, because unset means "use the
//! embedded backend". As in the Go service, a variable set to the empty
//! string counts as unset. A bad value stops start-up with a message naming
//! the variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, Parser, ValueEnum};

#[derive(Debug, Clone, Parser)]
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
        working directory); a flag of the same name overrides it."
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub cache: CacheConfig,
    #[command(flatten)]
    pub bus: BusConfig,
    #[command(flatten)]
    pub workers: WorkerConfig,
    #[command(flatten)]
    pub log: LogConfig,
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

    /// Requests handled at once; beyond this they get 503 at once (load shedding)
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT", value_name = "HTTP_MAX_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_in_flight: u32,

    /// Time allowed for a graceful shutdown (drain requests, outbox and workers)
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
#[command(
    next_help_heading = "Database (PostgreSQL when DATABASE_URL or DB_HOST is set, else SQLite)"
)]
pub struct DatabaseConfig {
    /// PostgreSQL URL (postgres://user:pass@host:5432/db); overrides DB_*. A sqlite: URL names a SQLite file
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// PostgreSQL host
    #[arg(long, env = "DB_HOST", value_name = "DB_HOST")]
    pub db_host: Option<String>,

    /// PostgreSQL port
    #[arg(long, env = "DB_PORT", value_name = "DB_PORT", default_value_t = 5432)]
    pub db_port: u16,

    /// PostgreSQL user
    #[arg(
        long,
        env = "DB_USER",
        value_name = "DB_USER",
        default_value = "postgres"
    )]
    pub db_user: String,

    /// PostgreSQL password
    #[arg(
        long,
        env = "DB_PASSWORD",
        value_name = "DB_PASSWORD",
        default_value = "postgres",
        hide_env_values = true
    )]
    pub db_password: String,

    /// PostgreSQL database
    #[arg(
        long,
        env = "DB_NAME",
        value_name = "DB_NAME",
        default_value = "highload_db"
    )]
    pub db_name: String,

    /// PostgreSQL TLS mode
    #[arg(long, env = "DB_SSLMODE", value_name = "DB_SSLMODE", default_value = "disable",
          value_parser = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])]
    pub db_sslmode: String,

    /// Most connections in the pool (SQLite: read connections)
    #[arg(long, env = "DB_MAX_CONNECTIONS", value_name = "DB_MAX_CONNECTIONS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub db_max_connections: u32,

    /// How long a request waits for a free connection before 503
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", value_name = "DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,

    /// SQLite database file, used when no PostgreSQL is configured (created with its directory)
    #[arg(
        long,
        env = "SQLITE_PATH",
        value_name = "SQLITE_PATH",
        default_value = "./data/highload.db"
    )]
    pub sqlite_path: PathBuf,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cache (Redis when REDIS_URL or REDIS_HOST is set, else in-process)")]
pub struct CacheConfig {
    /// Redis URL (redis://:password@host:6379/0); overrides REDIS_*
    #[arg(
        long,
        env = "REDIS_URL",
        value_name = "REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Redis host
    #[arg(long, env = "REDIS_HOST", value_name = "REDIS_HOST")]
    pub redis_host: Option<String>,

    /// Redis port
    #[arg(
        long,
        env = "REDIS_PORT",
        value_name = "REDIS_PORT",
        default_value_t = 6379
    )]
    pub redis_port: u16,

    /// Redis password (empty: none)
    #[arg(
        long,
        env = "REDIS_PASSWORD",
        value_name = "REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub redis_password: String,

    /// Redis database number
    #[arg(long, env = "REDIS_DB", value_name = "REDIS_DB", default_value_t = 0)]
    pub redis_db: u32,

    /// Prefix of every cache key (share one Redis between deployments)
    #[arg(
        long,
        env = "CACHE_PREFIX",
        value_name = "CACHE_PREFIX",
        default_value = ""
    )]
    pub cache_prefix: String,

    /// How long a user stays cached
    #[arg(long, env = "CACHE_USER_TTL", value_name = "CACHE_USER_TTL", default_value = "1h", value_parser = parse_duration)]
    pub cache_user_ttl: Duration,

    /// How long an event stays cached
    #[arg(long, env = "CACHE_EVENT_TTL", value_name = "CACHE_EVENT_TTL", default_value = "30m", value_parser = parse_duration)]
    pub cache_event_ttl: Duration,

    /// Time limit of one Redis command; slower ones are served from the store
    #[arg(long, env = "CACHE_TIMEOUT", value_name = "CACHE_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    pub cache_timeout: Duration,

    /// Entries the in-process cache holds
    #[arg(
        long,
        env = "CACHE_MEMORY_CAPACITY",
        value_name = "CACHE_MEMORY_CAPACITY",
        default_value_t = 100_000
    )]
    pub cache_memory_capacity: u64,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Bus (Kafka when KAFKA_BROKERS is set, else in-process)")]
pub struct BusConfig {
    /// Kafka bootstrap servers, comma-separated (host:9092,host2:9092)
    #[arg(long, env = "KAFKA_BROKERS", value_name = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Topic of the event messages (the dead-letter topic is <topic>.dlq)
    #[arg(
        long,
        env = "KAFKA_TOPIC",
        value_name = "KAFKA_TOPIC",
        default_value = "user-events"
    )]
    pub kafka_topic: String,

    /// Consumer group of the workers
    #[arg(
        long,
        env = "KAFKA_GROUP_ID",
        value_name = "KAFKA_GROUP_ID",
        default_value = "highload-service"
    )]
    pub kafka_group_id: String,

    /// Partitions of the topics created at start (existing topics keep theirs)
    #[arg(long, env = "KAFKA_PARTITIONS", value_name = "KAFKA_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,

    /// Replication factor of the topics created at start
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", value_name = "KAFKA_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=100))]
    pub kafka_replication_factor: i32,

    /// How long the producer waits to batch messages
    #[arg(long, env = "KAFKA_LINGER", value_name = "KAFKA_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub kafka_linger: Duration,

    /// Compression of produced batches
    #[arg(long, env = "KAFKA_COMPRESSION", value_name = "KAFKA_COMPRESSION", default_value = "lz4",
          value_parser = ["none", "gzip", "snappy", "lz4"])]
    pub kafka_compression: String,

    /// How long a message is retried before its publish counts as failed (the outbox keeps it)
    #[arg(long, env = "KAFKA_DELIVERY_TIMEOUT", value_name = "KAFKA_DELIVERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub kafka_delivery_timeout: Duration,

    /// Run the outbox relay in this process (false: API-only replica; another one relays)
    #[arg(long, env = "OUTBOX_RELAY_ENABLED", value_name = "OUTBOX_RELAY_ENABLED", default_value = "true",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub outbox_relay_enabled: bool,

    /// Outbox rows published per batch
    #[arg(long, env = "OUTBOX_BATCH_SIZE", value_name = "OUTBOX_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub outbox_batch_size: u32,

    /// How often the relay looks for rows written by other replicas
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", value_name = "OUTBOX_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub outbox_poll_interval: Duration,
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

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl DatabaseConfig {
    pub fn backend(&self) -> Result<DatabaseBackend, String> {
        if let Some(url) = &self.database_url {
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                return Ok(DatabaseBackend::Sqlite(PathBuf::from(path)));
            }
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                return Ok(DatabaseBackend::Postgres(url.clone()));
            }
            return Err(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
            );
        }
        match &self.db_host {
            Some(host) => Ok(DatabaseBackend::Postgres(format!(
                "postgres://{}:{}@{}:{}/{}?sslmode={}",
                encode(&self.db_user),
                encode(&self.db_password),
                host,
                self.db_port,
                encode(&self.db_name),
                self.db_sslmode
            ))),
            None => Ok(DatabaseBackend::Sqlite(self.sqlite_path.clone())),
        }
    }
}

impl CacheConfig {
    /// The Redis URL, if Redis is configured.
    pub fn redis_url(&self) -> Option<String> {
        if let Some(url) = &self.redis_url {
            return Some(url.clone());
        }
        let host = self.redis_host.as_ref()?;
        let auth = if self.redis_password.is_empty() {
            String::new()
        } else {
            format!(":{}@", encode(&self.redis_password))
        };
        Some(format!(
            "redis://{auth}{host}:{}/{}",
            self.redis_port, self.redis_db
        ))
    }
}

/// Percent-encodes a URL component (user, password, database name).
fn encode(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    for byte in component.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Config {
    /// Reads `.env` (if present) and the environment, then the command line.
    /// On a bad value, prints which variable is wrong and exits.
    pub fn load() -> Self {
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
        let config = Self::parse();
        if let Err(message) = config.validate() {
            Self::command()
                .error(clap::error::ErrorKind::ValueValidation, message)
                .exit();
        }
        config
    }

    /// Checks that settings fit together (single values are checked while
    /// parsing).
    pub fn validate(&self) -> Result<(), String> {
        self.database.backend()?;
        if let Some(url) = self.cache.redis_url() {
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                return Err("REDIS_URL must start with redis:// or rediss://".into());
            }
        }
        if self.bus.kafka_delivery_timeout < Duration::from_secs(1) {
            return Err("KAFKA_DELIVERY_TIMEOUT must be at least 1s".into());
        }
        Ok(())
    }
}

/// Go's `getEnv` treats an empty variable as unset (`REDIS_PASSWORD=` in its
/// env.example); so do we, for the variables we read.
fn unset_empty_variables() {
    let command = Config::command();
    for name in command.get_arguments().filter_map(|arg| arg.get_env()) {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // SAFETY: called from `main` before the runtime starts any thread,
            // so nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
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
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_select_the_embedded_stack_on_port_8080() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.server.server_port, 8080);
        assert_eq!(config.server.server_host, "0.0.0.0");
        assert_eq!(
            config.database.backend().unwrap(),
            DatabaseBackend::Sqlite("./data/highload.db".into())
        );
        assert_eq!(config.bus.kafka_topic, "user-events");
        assert_eq!(config.bus.kafka_group_id, "highload-service");
        assert_eq!(config.workers.worker_count, 10);
        assert_eq!(config.cache.cache_user_ttl, Duration::from_secs(3600));
        assert_eq!(config.cache.cache_event_ttl, Duration::from_secs(1800));
        assert_eq!(config.server.http_body_limit, 1024 * 1024);
    }

    #[test]
    fn db_host_selects_postgres_with_go_defaults() {
        let config = parse(&["--db-host", "db.internal", "--db-password", "p@ss word"]).unwrap();
        assert_eq!(
            config.database.backend().unwrap(),
            DatabaseBackend::Postgres(
                "postgres://postgres:p%40ss%20word@db.internal:5432/highload_db?sslmode=disable"
                    .into()
            )
        );
    }

    #[test]
    fn redis_host_builds_a_url_with_go_defaults() {
        let config = parse(&["--redis-host", "cache", "--redis-password", "s3:cret"]).unwrap();
        assert_eq!(
            config.cache.redis_url().as_deref(),
            Some("redis://:s3%3Acret@cache:6379/0")
        );
        assert_eq!(parse(&[]).unwrap().cache.redis_url(), None);
    }

    #[test]
    fn database_url_wins_and_its_scheme_is_checked() {
        let config = parse(&["--database-url", "sqlite:/tmp/x.db", "--db-host", "h"]).unwrap();
        assert_eq!(
            config.database.backend().unwrap(),
            DatabaseBackend::Sqlite("/tmp/x.db".into())
        );
        let config = parse(&["--database-url", "mysql://x"]).unwrap();
        assert!(config.validate().unwrap_err().contains("DATABASE_URL"));
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
