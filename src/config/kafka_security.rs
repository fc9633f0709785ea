//! TLS and SASL to the Kafka brokers (`KAFKA_SECURITY_PROTOCOL`,
//! `KAFKA_SASL_*`, `KAFKA_SSL_*`), checked against each other when Kafka is
//! configured.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use crate::config::error::ConfigError;
use crate::config::parse::secret;

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum KafkaSecurityProtocol {
    #[default]
    #[value(name = "PLAINTEXT")]
    Plaintext,
    #[value(name = "SSL")]
    Ssl,
    #[value(name = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[value(name = "SASL_SSL")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// The name Kafka and librdkafka give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// Kafka's SASL mechanisms that need nothing but a user name and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaSaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl KafkaSaslMechanism {
    /// The name Kafka and librdkafka give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS and SASL to the Kafka brokers, checked against each other: SASL
/// settings only with a SASL protocol, TLS files only with a TLS one.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: KafkaSecurityProtocol,
    /// Set exactly when the protocol is SASL_PLAINTEXT or SASL_SSL.
    pub sasl: Option<KafkaSasl>,
    /// CA certificates (a PEM file or a directory); `None`: the system's.
    pub ssl_ca_location: Option<PathBuf>,
    /// A client certificate, for brokers that ask for one.
    pub ssl_client: Option<KafkaSslClient>,
}

#[derive(Debug, Clone)]
pub struct KafkaSasl {
    pub mechanism: KafkaSaslMechanism,
    pub username: String,
    pub password: SecretString,
}

#[derive(Debug, Clone)]
pub struct KafkaSslClient {
    pub certificate_location: PathBuf,
    pub key_location: PathBuf,
    /// The key file's password, when it is encrypted.
    pub key_password: Option<SecretString>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Kafka TLS and SASL")]
pub(super) struct KafkaSecurityArgs {
    /// How to talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", value_name = "KAFKA_SECURITY_PROTOCOL",
          value_enum, ignore_case = true, default_value_t = KafkaSecurityProtocol::Plaintext)]
    kafka_security_protocol: KafkaSecurityProtocol,

    /// SASL mechanism (with SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    #[arg(
        long,
        env = "KAFKA_SASL_MECHANISM",
        value_name = "KAFKA_SASL_MECHANISM",
        value_enum,
        ignore_case = true
    )]
    kafka_sasl_mechanism: Option<KafkaSaslMechanism>,

    /// SASL user name (with SASL_*)
    #[arg(long, env = "KAFKA_SASL_USERNAME", value_name = "KAFKA_SASL_USERNAME")]
    kafka_sasl_username: Option<String>,

    /// SASL password (with SASL_*)
    #[arg(long, env = "KAFKA_SASL_PASSWORD", value_name = "KAFKA_SASL_PASSWORD",
          hide_env_values = true, value_parser = secret)]
    kafka_sasl_password: Option<SecretString>,

    /// CA certificates (PEM file or directory) that sign the brokers' certificates (with SSL and SASL_SSL) [default: the system's]
    #[arg(
        long,
        env = "KAFKA_SSL_CA_LOCATION",
        value_name = "KAFKA_SSL_CA_LOCATION"
    )]
    kafka_ssl_ca_location: Option<PathBuf>,

    /// Client certificate (PEM) for brokers that ask for one; needs KAFKA_SSL_KEY_LOCATION
    #[arg(
        long,
        env = "KAFKA_SSL_CERTIFICATE_LOCATION",
        value_name = "KAFKA_SSL_CERTIFICATE_LOCATION"
    )]
    kafka_ssl_certificate_location: Option<PathBuf>,

    /// Private key (PEM) of KAFKA_SSL_CERTIFICATE_LOCATION
    #[arg(
        long,
        env = "KAFKA_SSL_KEY_LOCATION",
        value_name = "KAFKA_SSL_KEY_LOCATION"
    )]
    kafka_ssl_key_location: Option<PathBuf>,

    /// Password of an encrypted KAFKA_SSL_KEY_LOCATION
    #[arg(long, env = "KAFKA_SSL_KEY_PASSWORD", value_name = "KAFKA_SSL_KEY_PASSWORD",
          hide_env_values = true, value_parser = secret)]
    kafka_ssl_key_password: Option<SecretString>,
}

impl KafkaSecurityArgs {
    /// Checks the settings against each other and the files for
    /// existence; librdkafka reads them when the clients are created.
    pub(super) fn resolve(mut self) -> Result<KafkaSecurity, ConfigError> {
        let sasl = self.take_sasl()?;
        self.check_tls_files()?;
        let ssl_client = self.take_ssl_client()?;
        Ok(KafkaSecurity {
            protocol: self.kafka_security_protocol,
            sasl,
            ssl_ca_location: self.kafka_ssl_ca_location,
            ssl_client,
        })
    }

    /// The SASL settings: all three with a SASL protocol, none without.
    fn take_sasl(&mut self) -> Result<Option<KafkaSasl>, ConfigError> {
        if !self.kafka_security_protocol.uses_sasl() {
            let set = [
                ("KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism.is_some()),
                ("KAFKA_SASL_USERNAME", self.kafka_sasl_username.is_some()),
                ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password.is_some()),
            ];
            if let Some((variable, _)) = set.into_iter().find(|(_, set)| *set) {
                return Err(conflict(
                    variable,
                    "is set, but KAFKA_SECURITY_PROTOCOL is not SASL_PLAINTEXT or SASL_SSL",
                ));
            }
            return Ok(None);
        }
        let needed = "must be set when KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT or SASL_SSL";
        let mechanism = self.kafka_sasl_mechanism.ok_or_else(|| {
            conflict(
                "KAFKA_SASL_MECHANISM",
                &format!("{needed} (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"),
            )
        })?;
        Ok(Some(KafkaSasl {
            mechanism,
            username: self
                .kafka_sasl_username
                .take()
                .ok_or_else(|| conflict("KAFKA_SASL_USERNAME", needed))?,
            password: self
                .kafka_sasl_password
                .take()
                .ok_or_else(|| conflict("KAFKA_SASL_PASSWORD", needed))?,
        }))
    }

    /// The TLS files (and the key's password) only with a TLS protocol;
    /// each file named must be readable.
    fn check_tls_files(&self) -> Result<(), ConfigError> {
        let files = [
            ("KAFKA_SSL_CA_LOCATION", &self.kafka_ssl_ca_location),
            (
                "KAFKA_SSL_CERTIFICATE_LOCATION",
                &self.kafka_ssl_certificate_location,
            ),
            ("KAFKA_SSL_KEY_LOCATION", &self.kafka_ssl_key_location),
        ];
        if !self.kafka_security_protocol.uses_tls() {
            let key_password = (
                "KAFKA_SSL_KEY_PASSWORD",
                self.kafka_ssl_key_password.is_some(),
            );
            let set = files
                .iter()
                .map(|(variable, path)| (*variable, path.is_some()));
            if let Some((variable, _)) = set.chain([key_password]).find(|(_, set)| *set) {
                return Err(conflict(
                    variable,
                    "is set, but KAFKA_SECURITY_PROTOCOL is not SSL or SASL_SSL",
                ));
            }
        }
        for (variable, path) in files {
            if let Some(path) = path {
                crate::tls::check_readable(path)
                    .map_err(|reason| ConfigError::Invalid { variable, reason })?;
            }
        }
        Ok(())
    }

    /// The client certificate: its file and its key's, both or neither.
    fn take_ssl_client(&mut self) -> Result<Option<KafkaSslClient>, ConfigError> {
        match (
            self.kafka_ssl_certificate_location.take(),
            self.kafka_ssl_key_location.take(),
        ) {
            (Some(certificate_location), Some(key_location)) => Ok(Some(KafkaSslClient {
                certificate_location,
                key_location,
                key_password: self.kafka_ssl_key_password.take(),
            })),
            (None, None) => {
                if self.kafka_ssl_key_password.is_some() {
                    return Err(conflict(
                        "KAFKA_SSL_KEY_PASSWORD",
                        "is set, but KAFKA_SSL_KEY_LOCATION is not",
                    ));
                }
                Ok(None)
            }
            (Some(_), None) => Err(conflict(
                "KAFKA_SSL_CERTIFICATE_LOCATION",
                "a client certificate needs its key (KAFKA_SSL_KEY_LOCATION)",
            )),
            (None, Some(_)) => Err(conflict(
                "KAFKA_SSL_KEY_LOCATION",
                "a client key needs its certificate (KAFKA_SSL_CERTIFICATE_LOCATION)",
            )),
        }
    }
}

/// A setting that does not fit with the others.
fn conflict(variable: &'static str, reason: &str) -> ConfigError {
    ConfigError::Conflict {
        variable,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use crate::config::test_support::{parse, resolve_error, tls_files};

    use super::*;

    fn kafka_security(args: &[&str]) -> KafkaSecurity {
        let args = [&["--kafka-brokers", "k:9093"][..], args].concat();
        parse(&args).unwrap().bus.kafka.expect("Kafka").security
    }

    #[test]
    fn kafka_security_settings_resolve_together() {
        let files = tls_files();
        let security = kafka_security(&[]);
        assert_eq!(security.protocol, KafkaSecurityProtocol::Plaintext);
        assert!(security.sasl.is_none() && security.ssl_client.is_none());

        let security = kafka_security(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "scram-sha-512",
            "--kafka-sasl-username",
            "svc",
            "--kafka-sasl-password",
            "pw",
            "--kafka-ssl-ca-location",
            &files.ca,
            "--kafka-ssl-certificate-location",
            &files.cert,
            "--kafka-ssl-key-location",
            &files.key,
            "--kafka-ssl-key-password",
            "kp",
        ]);
        assert_eq!(security.protocol, KafkaSecurityProtocol::SaslSsl);
        let sasl = security.sasl.expect("SASL");
        assert_eq!(sasl.mechanism, KafkaSaslMechanism::ScramSha512);
        assert_eq!(sasl.username, "svc");
        assert_eq!(sasl.password.expose_secret(), "pw");
        assert_eq!(security.ssl_ca_location, Some(PathBuf::from(&files.ca)));
        let client = security.ssl_client.expect("client certificate");
        assert_eq!(client.key_location, PathBuf::from(&files.key));
        assert_eq!(client.key_password.unwrap().expose_secret(), "kp");

        // A CA directory is librdkafka's too.
        let ca_dir = files.dir.path().to_str().unwrap();
        let security = kafka_security(&[
            "--kafka-security-protocol",
            "SSL",
            "--kafka-ssl-ca-location",
            ca_dir,
        ]);
        assert_eq!(security.ssl_ca_location, Some(PathBuf::from(ca_dir)));

        // Without KAFKA_BROKERS nothing is checked.
        assert!(parse(&["--kafka-security-protocol", "SASL_SSL"]).is_ok());
    }

    #[test]
    fn kafka_security_settings_that_do_not_fit_are_named() {
        let files = tls_files();
        let sasl_ssl = [
            "--kafka-brokers",
            "k:9093",
            "--kafka-security-protocol",
            "SASL_SSL",
        ];
        let plaintext = ["--kafka-brokers", "k:9092"];
        let credentials = [
            "--kafka-sasl-mechanism",
            "PLAIN",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password",
            "p",
        ];
        let cases: [(Vec<&str>, &str, &str); 8] = [
            (sasl_ssl.to_vec(), "KAFKA_SASL_MECHANISM", "must be set"),
            (
                [&sasl_ssl[..], &["--kafka-sasl-mechanism", "PLAIN"]].concat(),
                "KAFKA_SASL_USERNAME",
                "must be set",
            ),
            (
                [&sasl_ssl[..], &credentials[..4]].concat(),
                "KAFKA_SASL_PASSWORD",
                "must be set",
            ),
            (
                [&plaintext[..], &credentials[..]].concat(),
                "KAFKA_SASL_MECHANISM",
                "is not SASL_PLAINTEXT or SASL_SSL",
            ),
            (
                [&plaintext[..], &["--kafka-ssl-ca-location", &files.ca]].concat(),
                "KAFKA_SSL_CA_LOCATION",
                "is not SSL or SASL_SSL",
            ),
            (
                [
                    &sasl_ssl[..],
                    &credentials[..],
                    &["--kafka-ssl-ca-location", "/nonexistent/ca.pem"],
                ]
                .concat(),
                "KAFKA_SSL_CA_LOCATION",
                "cannot read /nonexistent/ca.pem",
            ),
            (
                [
                    &sasl_ssl[..],
                    &credentials[..],
                    &["--kafka-ssl-key-location", &files.key],
                ]
                .concat(),
                "KAFKA_SSL_KEY_LOCATION",
                "needs its certificate",
            ),
            (
                [
                    &sasl_ssl[..],
                    &credentials[..],
                    &["--kafka-ssl-key-password", "kp"],
                ]
                .concat(),
                "KAFKA_SSL_KEY_PASSWORD",
                "KAFKA_SSL_KEY_LOCATION is not",
            ),
        ];
        for (args, variable, reason) in cases {
            let err = resolve_error(&args);
            assert_eq!(err.variable(), variable, "{args:?}: {err}");
            assert!(err.to_string().contains(reason), "{args:?}: {err}");
        }
        let err = parse(&["--kafka-sasl-mechanism", "GSSAPI"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("KAFKA_SASL_MECHANISM"), "{err}");
    }

    #[test]
    fn debug_of_the_config_never_shows_a_kafka_secret() {
        let files = tls_files();
        let config = parse(&[
            "--kafka-brokers",
            "k:9093",
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-sasl-mechanism",
            "PLAIN",
            "--kafka-sasl-username",
            "svc",
            "--kafka-sasl-password",
            "pw-sasl",
            "--kafka-ssl-certificate-location",
            &files.cert,
            "--kafka-ssl-key-location",
            &files.key,
            "--kafka-ssl-key-password",
            "pw-key",
        ])
        .unwrap();
        let debug = format!("{config:?} {config:#?}");
        assert!(
            !debug.contains("pw-sasl") && !debug.contains("pw-key"),
            "{debug}"
        );
        assert!(debug.contains("svc"), "the user is shown");
    }
}
