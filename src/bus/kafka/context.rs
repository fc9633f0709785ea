//! The client context every Kafka client of the service shares: librdkafka's
//! logs routed into `tracing`; on the consumer its statistics turned into
//! the `kafka_consumer_lag` metric, and its rebalances into the offsets'
//! bookkeeping. Also the security settings every
//! client is configured with (TLS and SASL, [`apply_security`]).

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;

use secrecy::ExposeSecret;

use super::offsets::Offsets;
use crate::config::kafka_security::KafkaSecurity;
use crate::metrics::{Metrics, PartitionLabels};

/// Sets librdkafka's properties for `security`: the protocol, SASL's
/// mechanism and credentials, and the TLS files. librdkafka speaks TLS with
/// its own OpenSSL (compiled in) and reads the files when a client is
/// created, so a file it cannot use fails start-up.
pub(super) fn apply_security(config: &mut ClientConfig, security: &KafkaSecurity) {
    config.set("security.protocol", security.protocol.as_str());
    if let Some(sasl) = &security.sasl {
        config
            .set("sasl.mechanisms", sasl.mechanism.as_str())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose_secret());
    }
    if !security.protocol.uses_tls() {
        return;
    }
    // The certificate is checked, and the broker's name against it
    // (librdkafka's defaults, stated so that they cannot drift).
    config
        .set("enable.ssl.certificate.verification", "true")
        .set("ssl.endpoint.identification.algorithm", "https");
    match &security.ssl_ca_location {
        Some(location) => config.set("ssl.ca.location", location.to_string_lossy()),
        // The compiled-in OpenSSL knows no system directory: librdkafka
        // looks for the system's CA bundle in the usual places.
        None => config.set("ssl.ca.location", "probe"),
    };
    if let Some(client) = &security.ssl_client {
        config
            .set(
                "ssl.certificate.location",
                client.certificate_location.to_string_lossy(),
            )
            .set("ssl.key.location", client.key_location.to_string_lossy());
        if let Some(password) = &client.key_password {
            config.set("ssl.key.password", password.expose_secret());
        }
    }
}

/// Routes librdkafka's logs into `tracing`. Connection failures, which it
/// logs as errors and repeats while a broker is down, become warnings: the
/// client reconnects by itself, and the health checks report the outage.
/// On the consumer it also turns librdkafka's statistics into the
/// `kafka_consumer_lag` metric, and drops the bookkeeping of revoked
/// partitions.
#[derive(Clone, Default)]
pub(super) struct KafkaContext {
    lag: Option<Arc<Metrics>>,
    /// The consumer's offsets bookkeeping (unused by the other clients).
    offsets: Offsets,
}

impl KafkaContext {
    /// The consumer's context: it reports the lag per partition, and keeps
    /// its offsets bookkeeping to the partitions the consumer holds.
    pub(super) fn consumer(metrics: Arc<Metrics>) -> Self {
        Self {
            lag: Some(metrics),
            offsets: Offsets::default(),
        }
    }

    /// The consumer's offsets bookkeeping: one per consumer, so that a
    /// consumer that replaces another starts afresh.
    pub(super) fn offsets(&self) -> &Offsets {
        &self.offsets
    }
}

impl ClientContext for KafkaContext {
    fn stats(&self, statistics: Statistics) {
        let Some(metrics) = &self.lag else {
            return;
        };
        if let Some(group) = &statistics.cgrp {
            metrics
                .kafka_partitions
                .set(i64::from(group.assignment_size));
        }
        for (topic, stats) in &statistics.topics {
            for partition in stats.partitions.values() {
                // -1 is librdkafka's internal "unassigned" partition.
                if partition.partition < 0 {
                    continue;
                }
                let labels = PartitionLabels {
                    topic: topic.clone(),
                    partition: partition.partition,
                };
                // Lag against the offsets stored after processing, where
                // known; against the committed ones otherwise.
                let lag = if partition.consumer_lag_stored >= 0 {
                    partition.consumer_lag_stored
                } else {
                    partition.consumer_lag
                };
                if partition.desired && lag >= 0 {
                    metrics.kafka_lag.get_or_create(&labels).set(lag);
                } else {
                    metrics.kafka_lag.remove(&labels);
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }
}

impl ConsumerContext for KafkaContext {
    /// Drops what the consumer knew of the partitions it gave up, and says
    /// which partitions it took or gave up, so that the log shows when a
    /// rebalance ended (and how long it held the group). With the
    /// cooperative protocol a rebalance names only the partitions that
    /// move.
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.offsets
                .lock()
                .expect("BUG: offsets poisoned")
                .revoke(list.elements().iter().map(|p| p.partition()));
        }
        let partitions = |list: &TopicPartitionList| {
            list.elements()
                .iter()
                .map(|p| p.partition().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = partitions(list), "kafka partitions assigned");
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = partitions(list), "kafka partitions revoked");
            }
            Rebalance::Error(err) => tracing::warn!(error = %err, "kafka rebalance failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rdkafka::producer::BaseProducer;

    use super::*;
    use crate::config::kafka_security::{
        KafkaSasl, KafkaSaslMechanism, KafkaSecurityProtocol, KafkaSslClient,
    };

    fn configured(security: &KafkaSecurity) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        apply_security(&mut config, security);
        config
    }

    fn sasl(mechanism: KafkaSaslMechanism) -> Option<KafkaSasl> {
        Some(KafkaSasl {
            mechanism,
            username: "svc-highload".into(),
            password: "s3cret".into(),
        })
    }

    /// A CA, and a client certificate it signed, as PEM files in `dir`.
    fn certificates(dir: &tempfile::TempDir) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["highload".to_owned()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        (
            write("ca.pem", ca.pem()),
            write("client.pem", client.pem()),
            write("client.key", client_key.serialize_pem()),
        )
    }

    #[test]
    fn plaintext_sets_only_the_protocol() {
        let config = configured(&KafkaSecurity::default());
        assert_eq!(config.get("security.protocol"), Some("PLAINTEXT"));
        for property in ["sasl.mechanisms", "sasl.username", "ssl.ca.location"] {
            assert_eq!(config.get(property), None, "{property}");
        }
    }

    #[test]
    fn sasl_plaintext_sends_the_mechanism_and_credentials_without_tls() {
        for (mechanism, name) in [
            (KafkaSaslMechanism::Plain, "PLAIN"),
            (KafkaSaslMechanism::ScramSha256, "SCRAM-SHA-256"),
            (KafkaSaslMechanism::ScramSha512, "SCRAM-SHA-512"),
        ] {
            let config = configured(&KafkaSecurity {
                protocol: KafkaSecurityProtocol::SaslPlaintext,
                sasl: sasl(mechanism),
                ..KafkaSecurity::default()
            });
            assert_eq!(config.get("security.protocol"), Some("SASL_PLAINTEXT"));
            assert_eq!(config.get("sasl.mechanisms"), Some(name));
            assert_eq!(config.get("sasl.username"), Some("svc-highload"));
            assert_eq!(config.get("sasl.password"), Some("s3cret"));
            assert_eq!(config.get("ssl.ca.location"), None);
            // librdkafka knows each mechanism (SCRAM needs OpenSSL).
            config
                .create::<BaseProducer>()
                .unwrap_or_else(|err| panic!("librdkafka takes {name}: {err}"));
        }
    }

    #[test]
    fn ssl_checks_the_broker_against_the_system_cas_unless_a_ca_is_given() {
        let config = configured(&KafkaSecurity {
            protocol: KafkaSecurityProtocol::Ssl,
            ..KafkaSecurity::default()
        });
        assert_eq!(config.get("security.protocol"), Some("SSL"));
        assert_eq!(config.get("ssl.ca.location"), Some("probe"));
        assert_eq!(
            config.get("enable.ssl.certificate.verification"),
            Some("true")
        );
        assert_eq!(
            config.get("ssl.endpoint.identification.algorithm"),
            Some("https")
        );
        assert_eq!(config.get("sasl.mechanisms"), None);
        assert_eq!(config.get("ssl.certificate.location"), None);
        config
            .create::<BaseProducer>()
            .expect("librdkafka was built with TLS");
    }

    #[test]
    fn sasl_ssl_with_a_ca_and_a_client_certificate_sets_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = certificates(&dir);
        let config = configured(&KafkaSecurity {
            protocol: KafkaSecurityProtocol::SaslSsl,
            sasl: sasl(KafkaSaslMechanism::ScramSha512),
            ssl_ca_location: Some(ca.clone()),
            ssl_client: Some(KafkaSslClient {
                certificate_location: cert.clone(),
                key_location: key.clone(),
                key_password: Some("key-pass".into()),
            }),
        });
        let path = |path: &PathBuf| path.to_str().unwrap().to_owned();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("ssl.ca.location"), Some(path(&ca).as_str()));
        assert_eq!(
            config.get("ssl.certificate.location"),
            Some(path(&cert).as_str())
        );
        assert_eq!(config.get("ssl.key.location"), Some(path(&key).as_str()));
        assert_eq!(config.get("ssl.key.password"), Some("key-pass"));

        // librdkafka reads the files when the client is created.
        let mut unencrypted = config.clone();
        unencrypted.remove("ssl.key.password");
        unencrypted
            .create::<BaseProducer>()
            .expect("librdkafka takes the CA and the client certificate");
        let mut wrong_ca = unencrypted;
        wrong_ca.set("ssl.ca.location", key.to_str().unwrap());
        let err = wrong_ca
            .create::<BaseProducer>()
            .err()
            .expect("a key is no CA");
        assert!(err.to_string().contains("ssl.ca.location"), "{err}");
    }
}
