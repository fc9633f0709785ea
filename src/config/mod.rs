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
//! The command line is parsed into `Cli` and resolved once, at load, into
//! [`Config`](crate::config::Config): which store, whether Redis, whether Kafka, each with the
//! options its client needs. Nothing later chooses a backend or parses a
//! URL again. Passwords (`DB_PASSWORD`, `REDIS_PASSWORD`, and those inside
//! `DATABASE_URL` and `REDIS_URL`) are held in types whose `Debug` leaves
//! them out, so logging a configuration never leaks one.
//!
//! This file only loads: it reads `.env`, parses `Cli` and resolves it.
//! The settings themselves follow one rule: each component's live in a
//! file of their own under `config/`, with its clap arguments (flags,
//! variables, defaults and `--help`), the resolved type the component is
//! built from, its TLS settings and their tests: `server.rs` (address,
//! limits, admission control, listener), `guard.rs` (rate limit,
//! idempotency keys, CORS), `database.rs`, `cache.rs`, `bus.rs` with
//! `kafka_security.rs`, `worker.rs`, `log.rs`, `auth.rs` and `otel.rs`
//! (span export). Those files import, by path, only the leaves `error.rs`
//! (`ConfigError`) and `parse.rs` (the value parsers they share), `tls.rs`
//! to check certificate files, and (`bus.rs`) `kafka_security.rs`; never
//! this file, nor the components they configure, so no import circle
//! passes through the configuration. A component takes its settings from
//! their file (`crate::config::cache::CacheConfig`); the names re-exported
//! here are the crate's public ones.

pub(crate) mod auth;
pub(crate) mod bus;
pub(crate) mod cache;
pub(crate) mod database;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod kafka_security;
pub(crate) mod log;
pub(crate) mod otel;
pub(crate) mod parse;
pub(crate) mod server;
pub(crate) mod worker;

use std::ffi::OsString;

use clap::{Args, CommandFactory, Parser};

use bus::BusArgs;
pub use bus::{BusConfig, KafkaConfig};
use cache::{CacheArgs, RedisTlsArgs};
pub use cache::{CacheConfig, LocalCacheConfig, RedisConfig};
use database::{DatabaseArgs, PostgresTlsArgs};
pub use database::{DatabaseBackend, DatabaseConfig, PostgresOptions, ReadReplica};
pub use error::ConfigError;
use guard::GuardArgs;
pub use guard::{CorsSettings, GuardConfig, RateLimitConfig, SecurityHeaders};
use kafka_security::KafkaSecurityArgs;
pub use kafka_security::{
    KafkaSasl, KafkaSaslMechanism, KafkaSecurity, KafkaSecurityProtocol, KafkaSslClient,
};
pub use log::{LogConfig, LogFormat};
use server::ListenerArgs;
pub use server::{AdmissionConfig, ListenerConfig, ListenerTlsConfig, ServerConfig};
pub use worker::{KeptFor, WorkerConfig};

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
    pub auth: auth::AuthConfig,
    /// Span export (`OTEL_*`).
    pub tracing: otel::TracingConfig,
    /// Settings of the Go service's latest version that are set and have
    /// no counterpart here, each with why: logged once at start.
    pub ignored: Vec<(&'static str, &'static str)>,
}

/// The Go service's settings with no counterpart here, and why.
const GO_SETTINGS_IGNORED: [(&str, &str); 4] = [
    (
        "ENCRYPTION_KEY",
        "secrets are read as given (enc: values are not decrypted); keep them in a secret store",
    ),
    (
        "DDOS_PROTECTION_ENABLED",
        "admission control and RATE_LIMIT_* protect the service here",
    ),
    (
        "SECURITY_XSS_PROTECTION",
        "browsers removed the filter X-XSS-Protection switched on; Content-Security-Policy does its work",
    ),
    ("API_KEY_LENGTH", "API keys are always 256 random bits here"),
];

/// The Go service's settings that are set (non-empty) and ignored.
fn ignored_go_settings() -> Vec<(&'static str, &'static str)> {
    GO_SETTINGS_IGNORED
        .into_iter()
        .filter(|(name, _)| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
        .collect()
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
    auth: auth::AuthArgs,
    #[command(flatten)]
    tracing: otel::TracingArgs,
    #[command(flatten)]
    tls: BackendTlsArgs,
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
        let auth = self.auth.resolve()?;
        if self.server.profiling && auth.mode == auth::AuthMode::None {
            return Err(ConfigError::Invalid {
                variable: "PROFILING",
                reason: "profiles are served to the admin scope only: set an AUTH_MODE".into(),
            });
        }
        let mut ignored = ignored_go_settings();
        if auth.mode == auth::AuthMode::None
            && std::env::var_os("JWT_SECRET").is_some_and(|v| !v.is_empty())
        {
            ignored.push((
                "JWT_SECRET",
                "AUTH_MODE is none, so no route is authenticated; set AUTH_MODE=accounts for the \
                 Go service's accounts, or jwt",
            ));
        }
        Ok(Config {
            server: self.server,
            database: self.database.resolve(&self.tls.postgres)?,
            cache: self.cache.resolve(&self.tls.redis)?,
            bus: self.bus.resolve(self.tls.kafka)?,
            workers: self.workers,
            log: self.log,
            listener: self.listener.resolve()?,
            guard: self.guard.resolve()?,
            auth,
            tracing: self.tracing.resolve()?,
            ignored,
        })
    }
}

// TLS to the backends, and Kafka's SASL. Each backend's settings are applied
// to its connection while that backend is resolved, in its own file, and
// only when it is configured: its files are read then, so a missing one
// stops start-up with its variable named.

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

/// What the settings' tests share: a command line parsed and resolved,
/// and TLS files to name in it.
#[cfg(test)]
mod test_support {
    use clap::Parser;

    use super::{Cli, Config, ConfigError};

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
    use std::time::Duration;

    use super::test_support::parse;
    use super::*;

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
}
