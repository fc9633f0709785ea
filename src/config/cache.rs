//! The cache's settings: Redis (`REDIS_URL`, `REDIS_*`) or the in-process
//! cache, the cache's keys and lifetimes (`CACHE_*`), and TLS to Redis
//! (`REDIS_TLS*`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::BoolishValueParser;
use redis::{
    ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::error::ConfigError;
use crate::config::parse::{parse_duration, secret};

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
    /// Bytes the in-process cache may take in memory (keys, values and bookkeeping).
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

#[derive(Debug, Args)]
#[command(next_help_heading = "Cache (Redis when REDIS_URL or REDIS_HOST is set, else in-process)")]
pub(super) struct CacheArgs {
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

    /// Bytes the in-process cache may take in memory: keys, values and bookkeeping (least recently used go first)
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

impl CacheArgs {
    pub(super) fn resolve(self, tls: &RedisTlsArgs) -> Result<CacheConfig, ConfigError> {
        let connection = match (&self.redis_url, &self.redis_host) {
            (Some(url), _) => {
                Some(tls.apply(redis_url_connection(url.expose_secret())?, "REDIS_URL")?)
            }
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
                Some(tls.apply(connection.set_redis_settings(settings), "REDIS_HOST")?)
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

#[derive(Debug, Args)]
#[command(next_help_heading = "Redis TLS (on with REDIS_TLS=true or a rediss:// REDIS_URL)")]
pub(super) struct RedisTlsArgs {
    /// Connect to Redis over TLS and check its certificate (a rediss:// REDIS_URL does too) [default: false]
    #[arg(long, env = "REDIS_TLS", value_name = "REDIS_TLS",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    redis_tls: Option<bool>,

    /// CA certificates (PEM) trusted to sign Redis's certificate, instead of the public (webpki) roots
    #[arg(long, env = "REDIS_TLS_CA_FILE", value_name = "REDIS_TLS_CA_FILE")]
    redis_tls_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for a Redis that asks for one; needs REDIS_TLS_KEY_FILE
    #[arg(long, env = "REDIS_TLS_CERT_FILE", value_name = "REDIS_TLS_CERT_FILE")]
    redis_tls_cert_file: Option<PathBuf>,

    /// Private key (PEM, not encrypted) of REDIS_TLS_CERT_FILE
    #[arg(long, env = "REDIS_TLS_KEY_FILE", value_name = "REDIS_TLS_KEY_FILE")]
    redis_tls_key_file: Option<PathBuf>,
}

impl RedisTlsArgs {
    /// Turns `connection` (from `source`, `REDIS_URL` or `REDIS_HOST`) into
    /// a TLS one when asked, with the certificates of the files read in:
    /// every client opened from it uses them.
    fn apply(
        &self,
        connection: ConnectionInfo,
        source: &'static str,
    ) -> Result<ConnectionInfo, ConfigError> {
        let (host, port, rediss) = tcp_address(&connection, source)?;
        if !self.tls_wanted(rediss)? {
            self.check_no_files()?;
            return Ok(connection);
        }
        if !matches!(
            connection.addr(),
            ConnectionAddr::Tcp(..) | ConnectionAddr::TcpTls { .. }
        ) {
            return Err(ConfigError::Conflict {
                variable: "REDIS_TLS",
                reason: "TLS needs a TCP address, not a Unix socket".into(),
            });
        }
        let connection = connection.set_addr(ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        });
        match self.certificates()? {
            Some(certificates) => self.with_certificates(connection, certificates),
            None => Ok(connection),
        }
    }

    /// Whether to connect over TLS: `REDIS_TLS`, else whether the URL is a
    /// `rediss://` one; the two must not disagree.
    fn tls_wanted(&self, rediss: bool) -> Result<bool, ConfigError> {
        match (self.redis_tls, rediss) {
            (Some(false), true) => Err(ConfigError::Conflict {
                variable: "REDIS_TLS",
                reason: "is false, but REDIS_URL is a rediss:// (TLS) URL".into(),
            }),
            (Some(on), _) => Ok(on || rediss),
            (None, _) => Ok(rediss),
        }
    }

    /// Without TLS, no TLS file may be named.
    fn check_no_files(&self) -> Result<(), ConfigError> {
        let files = [
            ("REDIS_TLS_CA_FILE", &self.redis_tls_ca_file),
            ("REDIS_TLS_CERT_FILE", &self.redis_tls_cert_file),
            ("REDIS_TLS_KEY_FILE", &self.redis_tls_key_file),
        ];
        match files.iter().find(|(_, path)| path.is_some()) {
            Some((variable, _)) => Err(ConfigError::Conflict {
                variable,
                reason: "is set, but TLS to Redis is off (set REDIS_TLS=true, or use a \
                         rediss:// REDIS_URL)"
                    .into(),
            }),
            None => Ok(()),
        }
    }

    /// The CA and the client certificate, read from their files; `None`
    /// when neither is named.
    fn certificates(&self) -> Result<Option<TlsCertificates>, ConfigError> {
        let invalid = |variable| move |reason| ConfigError::Invalid { variable, reason };
        let root_cert = self
            .redis_tls_ca_file
            .as_deref()
            .map(crate::tls::read_certificates)
            .transpose()
            .map_err(invalid("REDIS_TLS_CA_FILE"))?;
        let client_tls = match (&self.redis_tls_cert_file, &self.redis_tls_key_file) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: crate::tls::read_certificates(cert)
                    .map_err(invalid("REDIS_TLS_CERT_FILE"))?,
                client_key: crate::tls::read_private_key(key)
                    .map_err(invalid("REDIS_TLS_KEY_FILE"))?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Conflict {
                    variable: "REDIS_TLS_CERT_FILE",
                    reason: "a client certificate needs its key (REDIS_TLS_KEY_FILE)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Conflict {
                    variable: "REDIS_TLS_KEY_FILE",
                    reason: "a client key needs its certificate (REDIS_TLS_CERT_FILE)".into(),
                });
            }
        };
        if root_cert.is_none() && client_tls.is_none() {
            return Ok(None);
        }
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// `connection` carrying `certificates`, as the client builds it.
    fn with_certificates(
        &self,
        connection: ConnectionInfo,
        certificates: TlsCertificates,
    ) -> Result<ConnectionInfo, ConfigError> {
        let client = redis::Client::build_with_tls(connection, certificates).map_err(|err| {
            ConfigError::Invalid {
                variable: if self.redis_tls_ca_file.is_some() {
                    "REDIS_TLS_CA_FILE"
                } else {
                    "REDIS_TLS_CERT_FILE"
                },
                reason: format!("{err}"),
            }
        })?;
        Ok(client.get_connection_info().clone())
    }
}

/// The host and port of `connection` (from `source`), and whether it is a
/// TLS one already (a `rediss://` URL); a Unix socket has neither.
fn tcp_address(
    connection: &ConnectionInfo,
    source: &'static str,
) -> Result<(String, u16, bool), ConfigError> {
    match connection.addr() {
        ConnectionAddr::Tcp(host, port) => Ok((host.clone(), *port, false)),
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => {
            if *insecure {
                return Err(ConfigError::Invalid {
                    variable: source,
                    reason: "#insecure (TLS without checking the certificate) is not \
                             supported; give the CA in REDIS_TLS_CA_FILE"
                        .into(),
                });
            }
            Ok((host.clone(), *port, true))
        }
        // A Unix socket.
        _ => Ok((String::new(), 0, false)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{parse, resolve_error, tls_files};

    use super::*;

    fn redis(config: &Config) -> &ConnectionInfo {
        &config.cache.redis.as_ref().expect("Redis").connection
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

    fn is_tls(connection: &ConnectionInfo) -> bool {
        matches!(
            connection.addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        )
    }

    #[test]
    fn rediss_urls_and_redis_tls_connect_over_tls() {
        let files = tls_files();
        let config = parse(&["--redis-url", "rediss://:pw@cache.internal:6380/1"]).unwrap();
        assert!(is_tls(redis(&config)), "{:?}", redis(&config).addr());
        assert_eq!(redis(&config).redis_settings().password(), Some("pw"));

        let config = parse(&["--redis-host", "cache", "--redis-tls", "true"]).unwrap();
        assert_eq!(
            redis(&config).addr(),
            &ConnectionAddr::TcpTls {
                host: "cache".into(),
                port: 6379,
                insecure: false,
                tls_params: None
            }
        );
        let config = parse(&["--redis-url", "redis://cache:6379/0", "--redis-tls", "1"]).unwrap();
        assert!(is_tls(redis(&config)));
        assert!(!is_tls(redis(&parse(&["--redis-host", "cache"]).unwrap())));

        // The CA and client certificate travel inside the connection.
        let config = parse(&[
            "--redis-url",
            "rediss://cache:6380",
            "--redis-tls-ca-file",
            &files.ca,
            "--redis-tls-cert-file",
            &files.cert,
            "--redis-tls-key-file",
            &files.key,
        ])
        .unwrap();
        let ConnectionAddr::TcpTls { tls_params, .. } = redis(&config).addr() else {
            panic!("TLS");
        };
        assert!(tls_params.is_some());
    }

    #[test]
    fn redis_tls_settings_that_cannot_work_are_named() {
        let files = tls_files();
        let cases: [(&[&str], &str, &str); 6] = [
            (
                &["--redis-url", "rediss://cache/#insecure"],
                "REDIS_URL",
                "not supported",
            ),
            (
                &["--redis-url", "rediss://cache", "--redis-tls", "false"],
                "REDIS_TLS",
                "rediss://",
            ),
            (
                &["--redis-host", "cache", "--redis-tls-ca-file", &files.ca],
                "REDIS_TLS_CA_FILE",
                "TLS to Redis is off",
            ),
            (
                &[
                    "--redis-url",
                    "rediss://cache",
                    "--redis-tls-ca-file",
                    "/nonexistent.pem",
                ],
                "REDIS_TLS_CA_FILE",
                "cannot read /nonexistent.pem",
            ),
            (
                &[
                    "--redis-url",
                    "rediss://cache",
                    "--redis-tls-cert-file",
                    &files.cert,
                ],
                "REDIS_TLS_CERT_FILE",
                "needs its key",
            ),
            (
                &[
                    "--redis-url",
                    "rediss://cache",
                    "--redis-tls-cert-file",
                    &files.cert,
                    "--redis-tls-key-file",
                    &files.cert,
                ],
                "REDIS_TLS_KEY_FILE",
                "no unencrypted PEM private key",
            ),
        ];
        for (args, variable, reason) in cases {
            let err = resolve_error(args);
            assert_eq!(err.variable(), variable, "{args:?}: {err}");
            assert!(err.to_string().contains(reason), "{args:?}: {err}");
        }
    }
}
