//! Kafka bus (rdkafka, librdkafka built from source): the configured
//! backend.
//!
//! Producer: idempotent (`enable.idempotence`, `acks=all`), so retries
//! inside librdkafka neither duplicate nor reorder a partition's messages;
//! keys are partitioned like the Java client (murmur2), so each user's
//! messages land in one partition, in order. A publish resolves when the
//! broker has acknowledged it, or fails after the delivery timeout; the
//! outbox keeps the row until then.
//!
//! Consumer: group `KAFKA_GROUP_ID`, offsets stored only by
//! [`Acknowledge::ack`](super::Acknowledge::ack) after processing and
//! committed in the background and once more, synchronously, on close.
//! Workers finish messages out of order, so each partition's committable
//! offset is the one below its oldest unfinished message
//! ([`PartitionOffsets`](offsets::PartitionOffsets)).
//!
//! Partitions are assigned cooperatively, and a revoked partition's
//! bookkeeping is dropped with it.
//!
//! One file per concern: `context` (logs, lag and rebalances), `producer`
//! (with renewal and topic admin), `offsets`, `consumer` (with its probe).

mod consumer;
mod context;
mod offsets;
mod producer;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;

pub(crate) use consumer::KafkaSubscriber;
pub(crate) use producer::KafkaPublisher;

use crate::config::bus::KafkaConfig;
use crate::metrics::Metrics;

/// Everything the Kafka backend is configured with.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSettings {
    /// What the operator configured (`KAFKA_*`).
    pub kafka: KafkaConfig,
    /// Limit of a metadata request made by a health check.
    pub check_timeout: Duration,
    /// Receives the consumer's lag per partition.
    pub metrics: Arc<Metrics>,
}

impl KafkaSettings {
    pub(crate) fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.kafka.topic)
    }

    /// What every client shares: where the brokers are, who is asking, and
    /// how it proves it (TLS, SASL).
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("client.id", "highload");
        context::apply_security(&mut config, &self.kafka.security);
        config
    }
}

/// Creates the producer and the consumer; neither connects until used.
pub(crate) fn connect(
    settings: KafkaSettings,
) -> anyhow::Result<(KafkaPublisher, KafkaSubscriber)> {
    let publisher = KafkaPublisher::new(settings.clone())?;
    let subscriber = KafkaSubscriber::new(&settings)?;
    Ok((publisher, subscriber))
}
