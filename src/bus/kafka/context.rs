//! The client context every Kafka client of the service shares: librdkafka's
//! logs routed into `tracing`, and on the consumer its statistics turned
//! into the `kafka_consumer_lag` metric.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

use crate::metrics::{Metrics, PartitionLabels};

/// Routes librdkafka's logs into `tracing`. Connection failures, which it
/// logs as errors and repeats while a broker is down, become warnings: the
/// client reconnects by itself, and the health checks report the outage.
/// On the consumer it also turns librdkafka's statistics into the
/// `kafka_consumer_lag` metric.
#[derive(Clone, Default)]
pub(super) struct KafkaContext {
    lag: Option<Arc<Metrics>>,
}

impl KafkaContext {
    /// The consumer's context: it also reports the lag per partition.
    pub(super) fn reporting_lag(metrics: Arc<Metrics>) -> Self {
        Self { lag: Some(metrics) }
    }
}

impl ClientContext for KafkaContext {
    fn stats(&self, statistics: Statistics) {
        let Some(metrics) = &self.lag else {
            return;
        };
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

impl ConsumerContext for KafkaContext {}
