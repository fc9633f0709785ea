//! The Kafka publisher: an idempotent producer, renewed after failed
//! deliveries, and the admin client that creates the topics at start.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

use super::KafkaSettings;
use super::context::KafkaContext;
use crate::bus::{Delivery, Message, PublishError, Publisher};
use crate::tracing_context::{TRACEPARENT, TRACESTATE, TraceContext};

type KafkaProducer = FutureProducer<KafkaContext>;

/// Outbox batches out at once (see [`Publisher::max_in_flight`]): enough to
/// keep claiming while the brokers acknowledge, few enough that a broker
/// outage leaves at most this many batches waiting out the delivery timeout.
const MAX_IN_FLIGHT: usize = 4;

fn create_producer(settings: &KafkaSettings) -> anyhow::Result<KafkaProducer> {
    settings
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", settings.kafka.linger.as_millis().to_string())
        .set("compression.type", &settings.kafka.compression)
        .set(
            "message.timeout.ms",
            settings.kafka.delivery_timeout.as_millis().to_string(),
        )
        .create_with_context(KafkaContext::default())
        .context("invalid Kafka producer settings")
}

/// Adds the W3C trace headers (`traceparent`, and `tracestate` when there
/// is one) that a consumer continues the trace from.
fn trace_headers(headers: OwnedHeaders, trace: &TraceContext) -> OwnedHeaders {
    let headers = headers.insert(Header {
        key: TRACEPARENT,
        value: Some(trace.traceparent()),
    });
    match trace.tracestate() {
        Some(state) => headers.insert(Header {
            key: TRACESTATE,
            value: Some(state),
        }),
        None => headers,
    }
}

/// Publishes to the topic and parks dead letters on its `.dlq` twin.
pub struct KafkaPublisher {
    /// Replaced after failed deliveries, see [`KafkaPublisher::renew`].
    producer: RwLock<KafkaProducer>,
    admin: AdminClient<KafkaContext>,
    settings: KafkaSettings,
    /// Told after each publish that delivered something: wakes this
    /// process's consumer if it rests.
    published: Arc<Notify>,
}

impl KafkaPublisher {
    /// Creates the producer and the admin client; neither connects until
    /// used.
    pub(super) fn new(settings: KafkaSettings, published: Arc<Notify>) -> anyhow::Result<Self> {
        let producer = create_producer(&settings)?;
        let admin: AdminClient<KafkaContext> = settings
            .client_config()
            .create_with_context(KafkaContext::default())
            .context("invalid Kafka admin settings")?;
        Ok(Self {
            producer: RwLock::new(producer),
            admin,
            settings,
            published,
        })
    }

    fn producer(&self) -> KafkaProducer {
        self.producer
            .read()
            .expect("BUG: producer lock poisoned")
            .clone()
    }

    /// Replaces the producer after failed deliveries. An idempotent producer
    /// whose messages timed out must bump its epoch before producing again
    /// (or is left in a fatal state); a fresh producer starts clean instead.
    /// Nothing is lost: the failed rows stay in the outbox and are published
    /// again by the new producer. (tansu 0.6 crashes on the epoch bump,
    /// which this also avoids.)
    fn renew(&self, failed: &KafkaProducer) {
        let fresh = match create_producer(&self.settings) {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "failed to recreate the kafka producer"
                );
                return;
            }
        };
        let old = {
            let mut current = self.producer.write().expect("BUG: producer lock poisoned");
            // Another publish may have renewed it already.
            if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
                return;
            }
            std::mem::replace(&mut *current, fresh)
        };
        tracing::info!("kafka producer recreated after failed deliveries");
        // Destroying a producer blocks until its threads stop.
        tokio::task::spawn_blocking(move || drop(old));
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    /// Creates the topic and its dead-letter topic if they are missing.
    async fn prepare(&self) -> anyhow::Result<()> {
        let dead_letters = self.settings.dead_letter_topic();
        let replication = TopicReplication::Fixed(self.settings.kafka.replication_factor);
        let topics = [
            NewTopic::new(
                &self.settings.kafka.topic,
                self.settings.kafka.partitions,
                replication,
            ),
            NewTopic::new(
                &dead_letters,
                self.settings.kafka.partitions,
                TopicReplication::Fixed(self.settings.kafka.replication_factor),
            ),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics(&topics, &options)
            .await
            .context("failed to create Kafka topics")?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(topic, "kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("failed to create topic {topic}: {code}"),
            }
        }
        Ok(())
    }

    async fn publish(&self, messages: &[Message<'_>]) -> Vec<Result<(), PublishError>> {
        let producer = self.producer();
        let sends = messages.iter().map(|message| {
            let mut record = FutureRecord::to(&self.settings.kafka.topic)
                .key(message.key)
                .payload(message.payload);
            if let Some(trace) = message.trace {
                record = record.headers(trace_headers(OwnedHeaders::new_with_capacity(2), trace));
            }
            // Waits for room in librdkafka's queue, then for the broker.
            producer.send(record, self.settings.kafka.delivery_timeout)
        });
        let results: Vec<_> = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .map(|result| {
                result
                    .map(|_| ())
                    .map_err(|(err, _)| PublishError(err.to_string()))
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            self.published.notify_one();
        }
        if results.iter().any(Result::is_err) {
            self.renew(&producer);
        }
        results
    }

    /// A publish enqueues every message in the producer in its first poll
    /// (`join_all` polls each send once, in order, and a send enqueues when
    /// first polled); the idempotent producer keeps that order per partition.
    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> anyhow::Result<()> {
        let topic = self.settings.dead_letter_topic();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "error",
                value: Some(reason),
            })
            .insert(Header {
                key: "origin",
                value: Some(&delivery.origin),
            });
        if let Some(trace) = &delivery.trace {
            headers = trace_headers(headers, trace);
        }
        let mut record = FutureRecord::to(&topic)
            .payload(delivery.payload.as_ref())
            .headers(headers);
        if let Some(key) = &delivery.key {
            record = record.key(key.as_ref());
        }
        let producer = self.producer();
        if let Err((err, _)) = producer
            .send(record, self.settings.kafka.delivery_timeout)
            .await
        {
            self.renew(&producer);
            return Err(anyhow::Error::new(err).context(format!("failed to publish to {topic}")));
        }
        tracing::error!(
            reason,
            origin = delivery.origin,
            topic,
            "message parked on the dead-letter topic"
        );
        Ok(())
    }

    async fn check(&self) -> anyhow::Result<()> {
        let producer = self.producer();
        let topic = self.settings.kafka.topic.clone();
        let timeout = self.settings.check_timeout;
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
                .context("kafka did not answer a metadata request")
        })
        .await?
    }

    async fn flush(&self, timeout: Duration) {
        let producer = self.producer();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("kafka producer not flushed within the shutdown deadline");
        }
    }
}
