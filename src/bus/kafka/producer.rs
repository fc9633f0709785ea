//! The Kafka publisher: an idempotent producer, renewed if librdkafka
//! declares it dead, and the admin client that creates the topics at start.

use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaSettings;
use super::context::KafkaContext;
use crate::bus::{Delivery, Message, PublishError, Publisher};
use crate::telemetry::trace_context::{TRACEPARENT, TRACESTATE, TraceContext};

type KafkaProducer = FutureProducer<KafkaContext>;

/// How long preparing the bus waits for new topics' partitions to get a
/// leader before it reports them not ready (and is retried).
const LEADERS_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The replication factor of a new topic when none is configured: a
/// replica on every broker, at most three (a broker lost leaves two, still
/// a majority).
fn replicas_for(brokers: usize) -> i32 {
    brokers.clamp(1, 3) as i32
}

/// The replicas that must have a message before it counts as written
/// (`acks=all`): a majority, so that losing a minority loses nothing
/// acknowledged and writes go on.
fn min_insync_replicas(replicas: i32) -> i32 {
    replicas / 2 + 1
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
pub(crate) struct KafkaPublisher {
    /// Replaced if it fails fatally, see [`KafkaPublisher::renew_if_fatal`].
    producer: RwLock<KafkaProducer>,
    admin: AdminClient<KafkaContext>,
    settings: KafkaSettings,
}

impl KafkaPublisher {
    /// Creates the producer and the admin client; neither connects until
    /// used.
    pub(super) fn new(settings: KafkaSettings) -> anyhow::Result<Self> {
        let producer = create_producer(&settings)?;
        let admin: AdminClient<KafkaContext> = settings
            .client_config()
            .create_with_context(KafkaContext::default())
            .context("invalid Kafka admin settings")?;
        Ok(Self {
            producer: RwLock::new(producer),
            admin,
            settings,
        })
    }

    /// Waits until every partition of `topic` has a leader; fails after
    /// [`LEADERS_TIMEOUT`] (the caller retries).
    async fn wait_for_leaders(&self, topic: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + LEADERS_TIMEOUT;
        loop {
            let led = self
                .metadata(Some(topic), |metadata| {
                    metadata.topics().first().is_some_and(|t| {
                        t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions()
                                .iter()
                                .all(|p| p.error().is_none() && p.leader() >= 0)
                    })
                })
                .await?;
            if led {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("topic {topic} has partitions without a leader");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many brokers the cluster has (a metadata request).
    async fn brokers(&self) -> anyhow::Result<usize> {
        self.metadata(None, |metadata| metadata.brokers().len())
            .await
    }

    /// Asks the cluster for its metadata (of `topic` only, if given) and
    /// reads what `read` needs of it. The call blocks: it runs off the
    /// async threads, within the health checks' timeout.
    async fn metadata<T: Send + 'static>(
        &self,
        topic: Option<&str>,
        read: impl FnOnce(&Metadata) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let producer = self.producer();
        let topic = topic.map(str::to_owned);
        let timeout = self.settings.check_timeout;
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(topic.as_deref(), timeout)
                .context("kafka did not answer a metadata request")?;
            Ok(read(&metadata))
        })
        .await?
    }

    fn producer(&self) -> KafkaProducer {
        self.producer
            .read()
            .expect("BUG: producer lock poisoned")
            .clone()
    }

    /// Replaces the producer once librdkafka has declared it failed for
    /// good (a fatal error: it then fails every message). An idempotent
    /// producer whose messages only timed out (a broker outage) is not
    /// fatal: librdkafka bumps its epoch and it produces again on its own.
    /// Nothing is lost either way: failed rows stay in the outbox and are
    /// published again.
    fn renew_if_fatal(&self, failed: &KafkaProducer) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        tracing::error!(error = %code, reason, "the kafka producer failed fatally; recreating it");
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
        tracing::info!("kafka producer recreated");
        // Destroying a producer blocks until its threads stop.
        tokio::task::spawn_blocking(move || drop(old));
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    /// Creates the topic and its dead-letter topic if they are missing,
    /// replicated as configured or as the cluster allows.
    async fn prepare(&self) -> anyhow::Result<()> {
        let dead_letters = self.settings.dead_letter_topic();
        let replicas = match self.settings.kafka.replication_factor {
            Some(replicas) => replicas,
            None => replicas_for(self.brokers().await?),
        };
        let min_insync = min_insync_replicas(replicas).to_string();
        let topic = |name| {
            NewTopic::new(
                name,
                self.settings.kafka.partitions,
                TopicReplication::Fixed(replicas),
            )
            .set("min.insync.replicas", &min_insync)
        };
        let topics = [topic(&self.settings.kafka.topic), topic(&dead_letters)];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics(&topics, &options)
            .await
            .context("failed to create Kafka topics")?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(
                    topic,
                    replicas,
                    min_insync_replicas = min_insync,
                    "kafka topic created"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("failed to create topic {topic}: {code}"),
            }
        }
        // A topic just created has no partition leaders for a moment, and
        // until it has, nothing can be produced to it or read from it.
        for name in [&self.settings.kafka.topic, &dead_letters] {
            self.wait_for_leaders(name).await?;
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
        if results.iter().any(Result::is_err) {
            self.renew_if_fatal(&producer);
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
            self.renew_if_fatal(&producer);
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
        self.metadata(Some(&self.settings.kafka.topic), |_| ())
            .await
    }

    /// The topic's own settings, as the broker reports them (its defaults
    /// included).
    async fn redelivery_window(&self) -> anyhow::Result<Option<Duration>> {
        let topic = &self.settings.kafka.topic;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let mut described = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
            .context("failed to read the topic's settings")?;
        let config = described
            .pop()
            .context("the broker described no topic")?
            .map_err(|code| anyhow::anyhow!("failed to read topic {topic}'s settings: {code}"))?;
        let value = |name: &str| config.get(name).and_then(|entry| entry.value.as_deref());
        redelivery_window(
            value("cleanup.policy"),
            value("retention.ms"),
            value("segment.ms"),
        )
        .with_context(|| format!("topic {topic}"))
    }

    async fn flush(&self, timeout: Duration) {
        let producer = self.producer();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("kafka producer not flushed within the shutdown deadline");
        }
    }
}

/// How long a message of a topic with these settings may still be read:
/// Kafka deletes whole segments, once the newest message of one is older
/// than `retention.ms`, so a message lives up to `retention.ms` plus
/// `segment.ms` (plus the broker's check, every five minutes by default).
/// `None` for a topic that keeps messages forever (`retention.ms=-1`, or
/// compacted).
fn redelivery_window(
    cleanup_policy: Option<&str>,
    retention_ms: Option<&str>,
    segment_ms: Option<&str>,
) -> anyhow::Result<Option<Duration>> {
    const RETENTION_CHECK: Duration = Duration::from_secs(5 * 60);
    if cleanup_policy.is_some_and(|policy| policy.contains("compact")) {
        return Ok(None);
    }
    let millis = |name: &str, raw: Option<&str>| -> anyhow::Result<i64> {
        let raw = raw.with_context(|| format!("{name} is not reported"))?;
        raw.trim()
            .parse()
            .with_context(|| format!("{name}={raw} is not a number"))
    };
    let retention = millis("retention.ms", retention_ms)?;
    if retention < 0 {
        return Ok(None);
    }
    let segment = millis("segment.ms", segment_ms)?.max(0);
    let total = u64::try_from(retention.saturating_add(segment)).unwrap_or(u64::MAX);
    Ok(Some(Duration::from_millis(total) + RETENTION_CHECK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_topics_are_replicated_on_up_to_three_brokers_and_need_a_majority() {
        let topics: Vec<_> = [1, 2, 3, 5]
            .into_iter()
            .map(|brokers| {
                let replicas = replicas_for(brokers);
                (brokers, replicas, min_insync_replicas(replicas))
            })
            .collect();
        assert_eq!(topics, [(1, 1, 1), (2, 2, 2), (3, 3, 2), (5, 3, 2)]);
        assert_eq!(min_insync_replicas(5), 3);
    }

    #[test]
    fn a_message_may_be_read_again_for_the_retention_and_a_segment_unless_kept_forever() {
        let week = "604800000";
        assert_eq!(
            redelivery_window(Some("delete"), Some(week), Some(week)).unwrap(),
            Some(Duration::from_secs(14 * 86400 + 300))
        );
        assert_eq!(
            redelivery_window(Some("delete"), Some("3600000"), Some("600000")).unwrap(),
            Some(Duration::from_secs(3600 + 600 + 300))
        );
        assert_eq!(
            redelivery_window(Some("delete"), Some("-1"), Some(week)).unwrap(),
            None
        );
        assert_eq!(
            redelivery_window(Some("compact,delete"), Some(week), Some(week)).unwrap(),
            None
        );
        assert!(redelivery_window(Some("delete"), None, Some(week)).is_err());
        assert!(redelivery_window(Some("delete"), Some("soon"), Some(week)).is_err());
    }
}
