//! The bus's settings: Kafka (`KAFKA_*`) or the in-process bus, and the
//! outbox relay that feeds it (`OUTBOX_*`). TLS and SASL to the brokers are
//! in [`super::kafka_security`].

use std::time::Duration;

use clap::Args;
use clap::builder::BoolishValueParser;

use crate::config::error::ConfigError;
use crate::config::kafka_security::{KafkaSecurity, KafkaSecurityArgs};
use crate::config::parse::parse_duration;

/// The shortest `KAFKA_DELIVERY_TIMEOUT` accepted.
const MIN_DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Static membership of the consumer group (`group.instance.id`).
    pub group_instance_id: Option<String>,
    /// Partitions of the topics created at start (existing ones are kept).
    pub partitions: i32,
    /// Replication factor of the topics created at start; `None`: as many
    /// replicas as the cluster has brokers, at most 3.
    pub replication_factor: Option<i32>,
    pub linger: Duration,
    pub compression: String,
    /// How long librdkafka retries a message before reporting it failed.
    pub delivery_timeout: Duration,
    /// The longest a consumer's fetch waits at the broker for data.
    pub fetch_wait: Duration,
    /// How long the group waits for a silent member before it hands its
    /// partitions to the others.
    pub session_timeout: Duration,
    /// TLS and SASL to the brokers.
    pub security: KafkaSecurity,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Bus (Kafka when KAFKA_BROKERS is set, else in-process)")]
pub(super) struct BusArgs {
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

    /// This replica's static member name in the consumer group, unique per replica and kept across its
    /// restarts (the pod name): a restarted replica takes its partitions back at once instead of
    /// waiting for the group to expire its previous self
    #[arg(
        long,
        env = "KAFKA_GROUP_INSTANCE_ID",
        value_name = "KAFKA_GROUP_INSTANCE_ID"
    )]
    kafka_group_instance_id: Option<String>,

    /// Partitions of the topics created at start (existing topics keep theirs)
    #[arg(long, env = "KAFKA_PARTITIONS", value_name = "KAFKA_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    kafka_partitions: i32,

    /// Replication factor of the topics created at start (existing topics keep theirs); they get min.insync.replicas of a majority of it [default: the brokers in the cluster, at most 3]
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", value_name = "KAFKA_REPLICATION_FACTOR",
          value_parser = clap::value_parser!(i32).range(1..=100))]
    kafka_replication_factor: Option<i32>,

    /// How long the producer waits to batch messages
    #[arg(long, env = "KAFKA_LINGER", value_name = "KAFKA_LINGER", default_value = "1ms", value_parser = parse_duration)]
    kafka_linger: Duration,

    /// Compression of produced batches
    #[arg(long, env = "KAFKA_COMPRESSION", value_name = "KAFKA_COMPRESSION", default_value = "lz4",
          value_parser = ["none", "gzip", "snappy", "lz4"])]
    kafka_compression: String,

    /// How long a message is retried before its publish counts as failed (the outbox keeps it)
    #[arg(long, env = "KAFKA_DELIVERY_TIMEOUT", value_name = "KAFKA_DELIVERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    kafka_delivery_timeout: Duration,

    /// Longest a consumer's fetch waits at the broker while nothing new arrives; a broker answers as soon as a message does, so this sets how often an idle consumer asks
    #[arg(long, env = "KAFKA_FETCH_WAIT", value_name = "KAFKA_FETCH_WAIT", default_value = "500ms", value_parser = parse_duration)]
    kafka_fetch_wait: Duration,

    /// How long the consumer group waits for an instance that stopped answering before its partitions go to the others (session.timeout.ms; the brokers allow 6s to 30m by default)
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT", value_name = "KAFKA_SESSION_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    kafka_session_timeout: Duration,

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

impl BusArgs {
    pub(super) fn resolve(self, security: KafkaSecurityArgs) -> Result<BusConfig, ConfigError> {
        // Checked even without Kafka, so that a bad value is found before
        // the day KAFKA_BROKERS is set.
        if self.kafka_delivery_timeout < MIN_DELIVERY_TIMEOUT {
            return Err(ConfigError::TooShort {
                variable: "KAFKA_DELIVERY_TIMEOUT",
                minimum: MIN_DELIVERY_TIMEOUT,
            });
        }
        let security = match &self.kafka_brokers {
            Some(_) => security.resolve()?,
            None => KafkaSecurity::default(),
        };
        Ok(BusConfig {
            kafka: self.kafka_brokers.map(|brokers| KafkaConfig {
                brokers,
                topic: self.kafka_topic,
                group_id: self.kafka_group_id,
                group_instance_id: self.kafka_group_instance_id,
                partitions: self.kafka_partitions,
                replication_factor: self.kafka_replication_factor,
                linger: self.kafka_linger,
                compression: self.kafka_compression,
                delivery_timeout: self.kafka_delivery_timeout,
                fetch_wait: self.kafka_fetch_wait,
                session_timeout: self.kafka_session_timeout,
                security,
            }),
            outbox_relay_enabled: self.outbox_relay_enabled,
            outbox_batch_size: self.outbox_batch_size,
            outbox_poll_interval: self.outbox_poll_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{parse, resolve_error};

    use super::*;

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
        assert_eq!(kafka.fetch_wait, Duration::from_millis(500));
        assert_eq!(kafka.session_timeout, Duration::from_secs(30));
        assert_eq!(kafka.linger, Duration::from_millis(1));
        assert_eq!(kafka.replication_factor, None, "as the cluster allows");
        let config = parse(&[
            "--kafka-brokers",
            "k1:9092",
            "--kafka-replication-factor",
            "2",
        ])
        .unwrap();
        assert_eq!(config.bus.kafka.unwrap().replication_factor, Some(2));

        let err = resolve_error(&["--kafka-delivery-timeout", "500ms"]);
        assert_eq!(err.variable(), "KAFKA_DELIVERY_TIMEOUT");
        assert_eq!(
            err.to_string(),
            "KAFKA_DELIVERY_TIMEOUT must be at least 1s"
        );
    }
}
