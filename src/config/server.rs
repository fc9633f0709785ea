//! The HTTP server's settings: address and port, request limits,
//! admission control (`ADMISSION_*`), health checks, and the listener's
//! connections and HTTPS (`HTTP_*`, `SERVER_TLS_*`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::BoolishValueParser;

use crate::config::error::{ConfigError, both_or_neither};
use crate::config::parse::{parse_duration, parse_positive_duration, parse_size};

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

    /// Serve CPU profiles (pprof format) and allocator statistics under /debug/ to the admin scope;
    /// needs an AUTH_MODE
    #[arg(long, env = "PROFILING", value_name = "PROFILING", default_value = "false",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub profiling: bool,

    /// Largest request body accepted; larger ones get 413 (bytes, or with KiB/MiB/KB/MB)
    #[arg(long, env = "HTTP_BODY_LIMIT", value_name = "HTTP_BODY_LIMIT", default_value = "1MiB", value_parser = parse_size)]
    pub http_body_limit: usize,

    /// Time a request's body has to arrive in full, from the end of its head; slower ones get 408 and
    /// their connection is closed (a body is received before the request takes an admission slot)
    #[arg(long, env = "HTTP_BODY_READ_TIMEOUT", value_name = "HTTP_BODY_READ_TIMEOUT", default_value = "10s",
          value_parser = parse_positive_duration)]
    pub http_body_read_timeout: Duration,

    /// Bytes of responses made and not yet written out to their clients, over all connections; a
    /// response that finds no room within ADMISSION_QUEUE_TIMEOUT gets 503 (bytes, or with KiB/MiB/KB/MB)
    #[arg(long, env = "HTTP_WRITE_BUFFER_LIMIT", value_name = "HTTP_WRITE_BUFFER_LIMIT", default_value = "32MiB",
          value_parser = parse_size)]
    pub http_write_buffer_limit: usize,

    /// Time limit of one request; slower ones get 503
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", value_name = "HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_request_timeout: Duration,

    /// Most API requests of a class (reads, writes) handled at once: the ceiling of the adaptive limit
    /// (see ADMISSION_*); four times as many may wait for admission
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT", value_name = "HTTP_MAX_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_in_flight: u32,

    /// Key of the MAC that makes list cursors unforgeable, at least 32 bytes; set the same on every
    /// replica (unset: one made by the first replica and kept in the database, which replicas of one
    /// database share)
    #[arg(long, env = "CURSOR_SECRET", value_name = "CURSOR_SECRET", hide_env_values = true,
          value_parser = parse_cursor_secret)]
    pub cursor_secret: Option<secrecy::SecretString>,

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

/// A `CURSOR_SECRET`: long enough that it cannot be guessed.
fn parse_cursor_secret(raw: &str) -> Result<secrecy::SecretString, String> {
    if raw.len() < 32 {
        return Err("must be at least 32 bytes (for example, openssl rand -hex 32)".into());
    }
    Ok(secrecy::SecretString::from(raw))
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

/// The HTTP listener: how long a connection may keep a slot without a
/// request in progress, how many connections it may hold, and HTTPS.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// From accepting a connection, or from the first byte of a later
    /// request, to the end of the request's head (TLS handshake included).
    pub header_read_timeout: Duration,
    /// Between requests on a keep-alive connection.
    pub idle_timeout: Duration,
    /// From a response handed to the connection to the end of its body
    /// taken by the client.
    pub write_timeout: Duration,
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
pub(super) struct ListenerArgs {
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

    /// Time a client has to take a response, from the end of its handling to its last byte; a client
    /// that reads slower is closed and the response's memory freed
    #[arg(long, env = "HTTP_WRITE_TIMEOUT", value_name = "HTTP_WRITE_TIMEOUT", default_value = "30s",
          value_parser = parse_positive_duration)]
    http_write_timeout: Duration,

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

    /// The Go service's switch for HTTPS with TLS_CERT and TLS_KEY (SERVER_TLS_* win)
    #[arg(long, env = "USE_TLS", value_name = "USE_TLS",
          value_parser = clap::builder::BoolishValueParser::new())]
    use_tls: Option<bool>,

    /// The Go service's certificate file, used when USE_TLS is true
    #[arg(long, env = "TLS_CERT", value_name = "TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// The Go service's key file, used when USE_TLS is true
    #[arg(long, env = "TLS_KEY", value_name = "TLS_KEY")]
    tls_key: Option<PathBuf>,
}

impl ListenerArgs {
    pub(super) fn resolve(self) -> Result<ListenerConfig, ConfigError> {
        let (cert, key) = match (self.server_tls_cert_file, self.server_tls_key_file) {
            (None, None) if self.use_tls == Some(true) => match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => (Some(cert), Some(key)),
                _ => {
                    return Err(ConfigError::Invalid {
                        variable: "USE_TLS",
                        reason: "true needs TLS_CERT and TLS_KEY (or SERVER_TLS_CERT_FILE and \
                                 SERVER_TLS_KEY_FILE)"
                            .into(),
                    });
                }
            },
            ours => ours,
        };
        let tls = both_or_neither(("SERVER_TLS_CERT_FILE", cert), ("SERVER_TLS_KEY_FILE", key))?
            .map(|(cert_file, key_file)| ListenerTlsConfig {
                cert_file,
                key_file,
                reload_interval: self.server_tls_reload_interval,
            });
        Ok(ListenerConfig {
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
            write_timeout: self.http_write_timeout,
            max_connections: self.http_max_connections,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{parse, resolve_error};

    #[test]
    fn use_tls_takes_the_go_services_files_and_ours_win() {
        let tls = parse(&[
            "--use-tls",
            "true",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap()
        .listener
        .tls
        .expect("HTTPS");
        assert_eq!(tls.cert_file.to_str(), Some("c.pem"));
        let ours = parse(&[
            "--use-tls",
            "true",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--server-tls-cert-file",
            "ours.pem",
            "--server-tls-key-file",
            "ours.key",
        ])
        .unwrap()
        .listener
        .tls
        .expect("HTTPS");
        assert_eq!(ours.cert_file.to_str(), Some("ours.pem"));
        // Without the switch the Go service serves plain HTTP, and so do we.
        let off = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert!(off.listener.tls.is_none());
        let err = resolve_error(&["--use-tls", "1", "--tls-cert", "c.pem"]);
        assert!(err.to_string().contains("USE_TLS"), "{err}");
    }

    #[test]
    fn profiles_are_off_by_default_and_need_an_auth_mode() {
        assert!(!parse(&[]).unwrap().server.profiling);
        let err = resolve_error(&["--profiling", "true"]);
        assert!(err.to_string().contains("PROFILING"), "{err}");
        let on = parse(&["--profiling", "true", "--auth-mode", "api-key"]).unwrap();
        assert!(on.server.profiling);
    }
}
