//! The store's settings: PostgreSQL (`DATABASE_URL`, `DB_*`) or a SQLite
//! file (`SQLITE_PATH`), the pool and group commit (`DB_MAX_CONNECTIONS`,
//! `WRITE_BATCH_*`), and TLS to PostgreSQL (`DB_SSL*`, libpq's names).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::config::error::ConfigError;
use crate::config::parse::{Retention, parse_duration, parse_retention, secret};

/// Where the data lives, and the pool that reaches it.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub backend: DatabaseBackend,
    /// Most connections in the pool (SQLite: read connections, at most two per core).
    pub max_connections: u32,
    /// How long a request waits for a free connection before 503.
    pub acquire_timeout: Duration,
    /// Most writes that share one transaction (group commit).
    pub write_batch_max: u32,
    /// How long a transaction waits for more writes before it commits.
    pub write_batch_window: Duration,
    /// How long events are kept (`EVENTS_RETENTION`); `None`: forever.
    pub events_retention: Option<Duration>,
    /// A streaming replica that takes reads (`DATABASE_READ_URL` or
    /// `DB_READ_HOST`).
    pub read_replica: Option<ReadReplica>,
}

/// A PostgreSQL replica for reads, and how far behind it may be.
#[derive(Debug, Clone)]
pub struct ReadReplica {
    pub options: PostgresOptions,
    /// `DB_READ_MAX_LAG`: further behind, reads go to the primary.
    pub max_lag: Duration,
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

#[derive(Debug, Args)]
#[command(
    next_help_heading = "Database (PostgreSQL when DATABASE_URL or DB_HOST is set, else SQLite)"
)]
pub(super) struct DatabaseArgs {
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

    /// PostgreSQL streaming replica that takes reads (postgres://user:pass@replica:5432/db); overrides DB_READ_HOST
    #[arg(
        long,
        env = "DATABASE_READ_URL",
        value_name = "DATABASE_READ_URL",
        hide_env_values = true,
        value_parser = secret
    )]
    database_read_url: Option<SecretString>,

    /// Host of a PostgreSQL streaming replica that takes reads, with the other DB_* settings
    #[arg(long, env = "DB_READ_HOST", value_name = "DB_READ_HOST")]
    db_read_host: Option<String>,

    /// Port of the replica at DB_READ_HOST (default: DB_PORT)
    #[arg(long, env = "DB_READ_PORT", value_name = "DB_READ_PORT")]
    db_read_port: Option<u16>,

    /// How far the replica may be behind the primary before reads go to the primary
    #[arg(long, env = "DB_READ_MAX_LAG", value_name = "DB_READ_MAX_LAG", default_value = "1s", value_parser = parse_duration)]
    db_read_max_lag: Duration,

    /// PostgreSQL database
    #[arg(
        long,
        env = "DB_NAME",
        value_name = "DB_NAME",
        default_value = "highload_db"
    )]
    db_name: String,

    /// Most connections in the pool (SQLite: read connections, at most two per core)
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

    /// How long events are kept: off (forever), or a duration (7d, 720h); older events leave
    /// the lists, their totals and GET /events/{id}. The activity they added up to stays
    #[arg(long, env = "EVENTS_RETENTION", value_name = "EVENTS_RETENTION", default_value = "off",
          value_parser = parse_retention)]
    events_retention: Retention,
}

impl DatabaseArgs {
    pub(super) fn resolve(self, tls: &PostgresTlsArgs) -> Result<DatabaseConfig, ConfigError> {
        let backend = match (&self.database_url, &self.db_host) {
            (Some(url), _) => database_url_backend(url.expose_secret(), tls)?,
            (None, Some(host)) => {
                // Built field by field: no URL to encode, so any character
                // works in the user, password and database name.
                let options = PgConnectOptions::new_without_pgpass()
                    .host(host)
                    .port(self.db_port)
                    .username(&self.db_user)
                    .password(self.db_password.expose_secret())
                    .database(&self.db_name);
                DatabaseBackend::Postgres(tls.apply(options, None)?.into())
            }
            (None, None) => DatabaseBackend::Sqlite(self.sqlite_path.clone()),
        };
        let read_replica = self.read_replica(&backend, tls)?;
        Ok(DatabaseConfig {
            backend,
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            write_batch_max: self.write_batch_max,
            write_batch_window: self.write_batch_window,
            events_retention: self.events_retention.0,
            read_replica,
        })
    }

    /// The replica of `DATABASE_READ_URL`, or of `DB_READ_HOST` with the
    /// primary's other `DB_*` settings; TLS as the primary's.
    fn read_replica(
        &self,
        primary: &DatabaseBackend,
        tls: &PostgresTlsArgs,
    ) -> Result<Option<ReadReplica>, ConfigError> {
        let options = match (&self.database_read_url, &self.db_read_host) {
            (None, None) => return Ok(None),
            (Some(url), _) => {
                let url = url.expose_secret();
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err(ConfigError::Scheme {
                        variable: "DATABASE_READ_URL",
                        expected: "postgres:// or postgresql://",
                    });
                }
                let options: PgConnectOptions =
                    url.parse().map_err(|err| ConfigError::Invalid {
                        variable: "DATABASE_READ_URL",
                        reason: format!("{err}"),
                    })?;
                tls.apply(options, Some(url))?
            }
            (None, Some(host)) => {
                let options = PgConnectOptions::new_without_pgpass()
                    .host(host)
                    .port(self.db_read_port.unwrap_or(self.db_port))
                    .username(&self.db_user)
                    .password(self.db_password.expose_secret())
                    .database(&self.db_name);
                tls.apply(options, None)?
            }
        };
        if !matches!(primary, DatabaseBackend::Postgres(_)) {
            let variable = if self.database_read_url.is_some() {
                "DATABASE_READ_URL"
            } else {
                "DB_READ_HOST"
            };
            return Err(ConfigError::Conflict {
                variable,
                reason: "a read replica needs a PostgreSQL primary (DATABASE_URL or DB_HOST)"
                    .into(),
            });
        }
        Ok(Some(ReadReplica {
            options: options.into(),
            max_lag: self.db_read_max_lag,
        }))
    }
}

/// `DATABASE_URL`: a `sqlite:` path or a PostgreSQL URL.
fn database_url_backend(url: &str, tls: &PostgresTlsArgs) -> Result<DatabaseBackend, ConfigError> {
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
    Ok(DatabaseBackend::Postgres(
        tls.apply(options, Some(url))?.into(),
    ))
}

/// PostgreSQL's `sslmode`, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SslMode {
    /// No TLS
    Disable,
    /// libpq's plain connection with a fallback to TLS, which the client cannot do: refused at start
    #[value(hide = true)]
    Allow,
    /// TLS when the server offers it, certificate not checked
    Prefer,
    /// TLS, certificate not checked (checked as verify-ca when DB_SSLROOTCERT is set)
    Require,
    /// TLS, certificate signed by a trusted CA (this build checks its name too, as verify-full)
    VerifyCa,
    /// TLS, certificate signed by a trusted CA and issued for the host connected to
    VerifyFull,
}

impl From<SslMode> for PgSslMode {
    fn from(mode: SslMode) -> Self {
        match mode {
            SslMode::Disable => Self::Disable,
            SslMode::Allow => Self::Allow,
            SslMode::Prefer => Self::Prefer,
            SslMode::Require => Self::Require,
            SslMode::VerifyCa => Self::VerifyCa,
            SslMode::VerifyFull => Self::VerifyFull,
        }
    }
}

#[derive(Debug, Args)]
#[command(
    next_help_heading = "PostgreSQL TLS (libpq's names; sslmode, sslrootcert, sslcert and sslkey in DATABASE_URL win)"
)]
pub(super) struct PostgresTlsArgs {
    /// TLS mode, as libpq: disable, prefer, require, verify-ca or verify-full [default: disable; with DATABASE_URL: prefer]
    #[arg(long, env = "DB_SSLMODE", value_name = "DB_SSLMODE", value_enum)]
    db_sslmode: Option<SslMode>,

    /// CA certificates (PEM) trusted to sign the server's certificate, besides the public (webpki) roots
    #[arg(long, env = "DB_SSLROOTCERT", value_name = "DB_SSLROOTCERT")]
    db_sslrootcert: Option<PathBuf>,

    /// Client certificate (PEM) for a server that asks for one; needs DB_SSLKEY
    #[arg(long, env = "DB_SSLCERT", value_name = "DB_SSLCERT")]
    db_sslcert: Option<PathBuf>,

    /// Private key (PEM, not encrypted) of DB_SSLCERT
    #[arg(long, env = "DB_SSLKEY", value_name = "DB_SSLKEY")]
    db_sslkey: Option<PathBuf>,
}

/// The TLS parameters a `DATABASE_URL` names in its query (sqlx reads
/// them; these are only looked at).
#[derive(Debug, Default)]
struct UrlTlsParameters {
    mode: bool,
    root_cert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl UrlTlsParameters {
    fn of(url: &str) -> Result<Self, ConfigError> {
        // url's errors name the part at fault, not the URL.
        let url = url::Url::parse(url).map_err(|err| ConfigError::Invalid {
            variable: "DATABASE_URL",
            reason: format!("{err}"),
        })?;
        let mut found = Self::default();
        for (key, value) in url.query_pairs() {
            let path = || Some(PathBuf::from(&*value));
            // The spellings sqlx accepts.
            match &*key {
                "sslmode" | "ssl-mode" => found.mode = true,
                "sslrootcert" | "ssl-root-cert" | "ssl-ca" => found.root_cert = path(),
                "sslcert" | "ssl-cert" => found.cert = path(),
                "sslkey" | "ssl-key" => found.key = path(),
                _ => {}
            }
        }
        Ok(found)
    }
}

impl PostgresTlsArgs {
    /// Applies the TLS settings to `options`. With a `DATABASE_URL`, what
    /// its query says wins and the variables fill in the rest, as libpq's
    /// `PGSSL*` variables do. The files are read here to check them; sqlx
    /// reads them again at each connection, so renewed ones are used.
    fn apply(
        &self,
        options: PgConnectOptions,
        url: Option<&str>,
    ) -> Result<PgConnectOptions, ConfigError> {
        const URL: &str = "DATABASE_URL";
        let in_url = url
            .map(UrlTlsParameters::of)
            .transpose()?
            .unwrap_or_default();
        let (mut mode, mode_variable) = match (in_url.mode, self.db_sslmode, url) {
            (true, _, _) => (options.get_ssl_mode(), URL),
            (false, Some(mode), _) => (mode.into(), "DB_SSLMODE"),
            // libpq's default, as for any connection string.
            (false, None, Some(_)) => (PgSslMode::Prefer, "DB_SSLMODE"),
            // The Go service's default.
            (false, None, None) => (PgSslMode::Disable, "DB_SSLMODE"),
        };
        if matches!(mode, PgSslMode::Allow) {
            return Err(ConfigError::Invalid {
                variable: mode_variable,
                reason: "sslmode allow (a plain connection, then TLS if that fails) is not \
                         supported; use prefer, or require"
                    .into(),
            });
        }
        // Where each file is named: in the URL, else in its variable.
        let named =
            |in_url: &Option<PathBuf>, variable: &'static str, value: &Option<PathBuf>| match (
                in_url, value,
            ) {
                (Some(path), _) => Some((URL, path.clone(), false)),
                (None, Some(path)) => Some((variable, path.clone(), true)),
                (None, None) => None,
            };
        let root_cert = named(&in_url.root_cert, "DB_SSLROOTCERT", &self.db_sslrootcert);
        let cert = named(&in_url.cert, "DB_SSLCERT", &self.db_sslcert);
        let key = named(&in_url.key, "DB_SSLKEY", &self.db_sslkey);
        let files = [&root_cert, &cert, &key];
        if matches!(mode, PgSslMode::Disable) {
            if let Some((variable, _, _)) = files.into_iter().flatten().next() {
                return Err(ConfigError::Conflict {
                    variable,
                    reason: "names a TLS file, but the TLS mode (DB_SSLMODE, or sslmode in \
                             DATABASE_URL) is disable"
                        .into(),
                });
            }
        }
        match (&cert, &key) {
            (Some((variable, ..)), None) => {
                return Err(ConfigError::Conflict {
                    variable,
                    reason: "a client certificate needs its key (DB_SSLKEY, or sslkey in \
                             DATABASE_URL)"
                        .into(),
                });
            }
            (None, Some((variable, ..))) => {
                return Err(ConfigError::Conflict {
                    variable,
                    reason: "a client key needs its certificate (DB_SSLCERT, or sslcert in \
                             DATABASE_URL)"
                        .into(),
                });
            }
            _ => {}
        }
        let invalid = |variable| move |reason| ConfigError::Invalid { variable, reason };
        let mut options = options;
        if let Some((variable, path, from_variable)) = &root_cert {
            crate::tls::read_certificates(path).map_err(invalid(*variable))?;
            if *from_variable {
                options = options.ssl_root_cert(path);
            }
            // libpq: with a root certificate, require checks the chain.
            if matches!(mode, PgSslMode::Require) {
                mode = PgSslMode::VerifyCa;
            }
        }
        if let Some((variable, path, from_variable)) = &cert {
            crate::tls::read_certificates(path).map_err(invalid(*variable))?;
            if *from_variable {
                options = options.ssl_client_cert(path);
            }
        }
        if let Some((variable, path, from_variable)) = &key {
            crate::tls::read_private_key(path).map_err(invalid(*variable))?;
            if *from_variable {
                options = options.ssl_client_key(path);
            }
        }
        Ok(options.ssl_mode(mode))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{parse, resolve_error, tls_files};

    use super::*;

    fn postgres(config: &Config) -> PgConnectOptions {
        match &config.database.backend {
            DatabaseBackend::Postgres(options) => options.connect_options(),
            other => panic!("expected PostgreSQL, got {other:?}"),
        }
    }

    #[test]
    fn events_retention_is_off_or_a_duration_of_at_least_a_second() {
        assert_eq!(parse(&[]).unwrap().database.events_retention, None);
        let kept =
            |raw: &str| parse(&["--events-retention", raw]).map(|c| c.database.events_retention);
        assert_eq!(kept(" OFF ").unwrap(), None);
        assert_eq!(kept("7d").unwrap(), Some(Duration::from_secs(7 * 86_400)));
        for refused in ["0s", "500ms", "forever", "-1d"] {
            assert!(kept(refused).is_err(), "{refused} was accepted");
        }
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
    fn a_read_replica_comes_from_its_url_or_from_db_read_host_with_the_other_db_settings() {
        let replica = |args: &[&str]| parse(args).unwrap().database.read_replica;
        assert!(replica(&["--db-host", "primary"]).is_none());
        let from_host = replica(&[
            "--db-host",
            "primary",
            "--db-port",
            "6432",
            "--db-user",
            "app",
            "--db-name",
            "orders",
            "--db-read-host",
            "standby",
        ])
        .unwrap();
        let options = from_host.options.connect_options();
        assert_eq!(
            (
                options.get_host(),
                options.get_port(),
                options.get_username()
            ),
            ("standby", 6432, "app")
        );
        assert_eq!(options.get_database(), Some("orders"));
        assert_eq!(from_host.max_lag, Duration::from_secs(1));
        let ported = replica(&[
            "--db-host",
            "p",
            "--db-read-host",
            "s",
            "--db-read-port",
            "5433",
        ]);
        assert_eq!(ported.unwrap().options.connect_options().get_port(), 5433);
        let from_url = replica(&[
            "--database-url",
            "postgres://app:pw@primary/orders",
            "--database-read-url",
            "postgres://app:pw@standby:5433/orders",
            "--db-read-host",
            "ignored",
            "--db-read-max-lag",
            "250ms",
        ])
        .unwrap();
        assert_eq!(from_url.options.connect_options().get_host(), "standby");
        assert_eq!(from_url.max_lag, Duration::from_millis(250));

        let err = resolve_error(&["--db-read-host", "standby"]);
        assert_eq!(err.variable(), "DB_READ_HOST");
        assert!(err.to_string().contains("PostgreSQL primary"), "{err}");
        let err = resolve_error(&[
            "--db-host",
            "p",
            "--database-read-url",
            "mysql://app:hunter2@standby/x",
        ]);
        assert_eq!(err.variable(), "DATABASE_READ_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn ssl_mode(args: &[&str]) -> PgSslMode {
        postgres(&parse(args).unwrap()).get_ssl_mode()
    }

    #[test]
    fn db_sslmode_has_libpq_meanings_and_defaults() {
        let files = tls_files();
        let host = ["--db-host", "db"];
        fn with<'a>(host: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
            [host, extra].concat()
        }
        assert!(
            matches!(ssl_mode(&host), PgSslMode::Disable),
            "Go's default"
        );
        for (mode, expected) in [
            ("disable", PgSslMode::Disable),
            ("prefer", PgSslMode::Prefer),
            ("require", PgSslMode::Require),
            ("verify-ca", PgSslMode::VerifyCa),
            ("verify-full", PgSslMode::VerifyFull),
        ] {
            let got = ssl_mode(&with(&host, &["--db-sslmode", mode]));
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{mode}");
        }
        // libpq: require with a root certificate checks the chain.
        let got = ssl_mode(&with(
            &host,
            &["--db-sslmode", "require", "--db-sslrootcert", &files.ca],
        ));
        assert!(matches!(got, PgSslMode::VerifyCa), "{got:?}");

        // A URL: its sslmode wins; without one DB_SSLMODE, else prefer.
        let url = "postgres://app@db:5432/x";
        assert!(matches!(
            ssl_mode(&["--database-url", url]),
            PgSslMode::Prefer
        ));
        let got = ssl_mode(&["--database-url", url, "--db-sslmode", "verify-full"]);
        assert!(matches!(got, PgSslMode::VerifyFull), "{got:?}");
        let got = ssl_mode(&[
            "--database-url",
            "postgres://app@db:5432/x?sslmode=require",
            "--db-sslmode",
            "verify-full",
        ]);
        assert!(matches!(got, PgSslMode::Require), "{got:?}");

        // allow is libpq's, but the client cannot do it: refused, named.
        let err = resolve_error(&with(&host, &["--db-sslmode", "allow"]));
        assert_eq!(err.variable(), "DB_SSLMODE");
        assert!(err.to_string().contains("not supported"), "{err}");
        let err = resolve_error(&["--database-url", "postgres://db/x?sslmode=allow"]);
        assert_eq!(err.variable(), "DATABASE_URL");
        let err = parse(&with(&host, &["--db-sslmode", "on"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DB_SSLMODE"), "{err}");
    }

    #[test]
    fn db_tls_files_are_read_at_start_and_named_when_wrong() {
        let files = tls_files();
        let options = postgres(
            &parse(&[
                "--db-host",
                "db",
                "--db-sslmode",
                "verify-full",
                "--db-sslrootcert",
                &files.ca,
                "--db-sslcert",
                &files.cert,
                "--db-sslkey",
                &files.key,
            ])
            .unwrap(),
        );
        let debug = format!("{options:?}");
        for path in [&files.ca, &files.cert, &files.key] {
            assert!(debug.contains(path.as_str()), "{path} in {debug}");
        }
        // The variables fill in what DATABASE_URL leaves out.
        let url = format!(
            "postgres://db/x?sslmode=verify-ca&sslcert={0}&sslkey={1}",
            files.cert, files.key
        );
        let options =
            postgres(&parse(&["--database-url", &url, "--db-sslrootcert", &files.ca]).unwrap());
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyCa));
        assert!(format!("{options:?}").contains(files.ca.as_str()));

        let missing = files.dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();
        let verify = ["--db-host", "db", "--db-sslmode", "verify-full"];
        let cases: [(Vec<&str>, &str, &str); 6] = [
            (
                [&verify[..], &["--db-sslrootcert", missing]].concat(),
                "DB_SSLROOTCERT",
                "cannot read",
            ),
            (
                [&verify[..], &["--db-sslrootcert", &files.key]].concat(),
                "DB_SSLROOTCERT",
                "no PEM certificate",
            ),
            (
                [&verify[..], &["--db-sslcert", &files.cert]].concat(),
                "DB_SSLCERT",
                "needs its key",
            ),
            (
                [
                    &verify[..],
                    &["--db-sslcert", &files.cert, "--db-sslkey", &files.ca],
                ]
                .concat(),
                "DB_SSLKEY",
                "no unencrypted PEM private key",
            ),
            (
                vec!["--db-host", "db", "--db-sslrootcert", &files.ca],
                "DB_SSLROOTCERT",
                "is disable",
            ),
            (
                vec![
                    "--database-url",
                    "postgres://db/x?sslmode=require&sslrootcert=/nonexistent.pem",
                ],
                "DATABASE_URL",
                "cannot read /nonexistent.pem",
            ),
        ];
        for (args, variable, reason) in cases {
            let err = resolve_error(&args);
            assert_eq!(err.variable(), variable, "{args:?}: {err}");
            assert!(err.to_string().contains(reason), "{args:?}: {err}");
        }
    }
}
