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
//! An idle consumer rests: once it has read every partition to its end it
//! pauses them, and looks again every `KAFKA_IDLE_FETCH_INTERVAL`, or at
//! once when this process publishes ([`rest`]). A broker that holds every
//! fetch for `KAFKA_FETCH_WAIT` is otherwise kept busy answering empty ones.
//!
//! One file per concern: `context` (logs and lag), `producer` (with
//! renewal and topic admin), `offsets`, `consumer` (with its probe), `rest`.

mod consumer;
mod context;
mod offsets;
mod producer;
mod rest;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use tokio::sync::Notify;

pub use consumer::KafkaSubscriber;
pub use producer::KafkaPublisher;

use crate::config::KafkaConfig;
use crate::metrics::Metrics;

/// Everything the Kafka backend is configured with.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// What the operator configured (`KAFKA_*`).
    pub kafka: KafkaConfig,
    /// Limit of a metadata request made by a health check.
    pub check_timeout: Duration,
    /// Receives the consumer's lag per partition.
    pub metrics: Arc<Metrics>,
}

impl KafkaSettings {
    pub fn dead_letter_topic(&self) -> String {
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
/// The publisher tells the consumer when it delivered, so that a consumer
/// resting while idle fetches this process's own events at once.
pub fn connect(settings: KafkaSettings) -> anyhow::Result<(KafkaPublisher, KafkaSubscriber)> {
    let published = Arc::new(Notify::new());
    let publisher = KafkaPublisher::new(settings.clone(), Arc::clone(&published))?;
    let subscriber = KafkaSubscriber::new(&settings, published)?;
    Ok((publisher, subscriber))
}
