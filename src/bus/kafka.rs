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
//! [`Acknowledge::ack`] after processing and committed in the background
//! and once more, synchronously, on close. Workers finish messages out of
//! order, so each partition's committable offset is the one below its
//! oldest unfinished message ([`PartitionOffsets`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use super::{Acknowledge, Delivery, Message, Probe, PublishError, Publisher, Subscriber};
use crate::metrics::{Metrics, PartitionLabels};

/// Routes librdkafka's logs into `tracing`. Connection failures, which it
/// logs as errors and repeats while a broker is down, become warnings: the
/// client reconnects by itself, and the health checks report the outage.
/// On the consumer it also turns librdkafka's statistics into the
/// `kafka_consumer_lag` metric.
#[derive(Clone, Default)]
pub struct KafkaContext {
    lag: Option<Arc<Metrics>>,
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

/// Everything the Kafka backend is configured with.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    /// Partitions of the topics created at start (existing ones are kept).
    pub partitions: i32,
    pub replication_factor: i32,
    pub linger: Duration,
    pub compression: String,
    /// How long librdkafka retries a message before reporting it failed.
    pub delivery_timeout: Duration,
    /// Limit of a metadata request made by a health check.
    pub check_timeout: Duration,
    /// Receives the consumer's lag per partition.
    pub metrics: Arc<Metrics>,
}

impl KafkaSettings {
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "highload");
        config
    }
}

type KafkaProducer = FutureProducer<KafkaContext>;

fn create_producer(settings: &KafkaSettings) -> anyhow::Result<KafkaProducer> {
    settings
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", settings.linger.as_millis().to_string())
        .set("compression.type", &settings.compression)
        .set(
            "message.timeout.ms",
            settings.delivery_timeout.as_millis().to_string(),
        )
        .create_with_context(KafkaContext::default())
        .context("invalid Kafka producer settings")
}

/// Creates the producer and the consumer; neither connects until used.
pub fn connect(settings: KafkaSettings) -> anyhow::Result<(KafkaPublisher, KafkaSubscriber)> {
    let producer = create_producer(&settings)?;
    let admin: AdminClient<KafkaContext> = settings
        .client_config()
        .create_with_context(KafkaContext::default())
        .context("invalid Kafka admin settings")?;
    let consumer: StreamConsumer<KafkaContext> = settings
        .client_config()
        .set("group.id", &settings.group_id)
        // Offsets are stored after processing (see Acknowledge) and the
        // stored ones committed every second and on close.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        // A new group starts at the beginning: nothing published before it
        // first joined is skipped.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("statistics.interval.ms", "5000")
        .create_with_context(KafkaContext {
            lag: Some(Arc::clone(&settings.metrics)),
        })
        .context("invalid Kafka consumer settings")?;
    let publisher = KafkaPublisher {
        producer: RwLock::new(producer),
        admin,
        settings: settings.clone(),
    };
    let subscriber = KafkaSubscriber {
        consumer: Some(Arc::new(consumer)),
        topic: settings.topic.clone(),
        check_timeout: settings.check_timeout,
        offsets: Arc::default(),
        subscribed: false,
    };
    Ok((publisher, subscriber))
}

pub struct KafkaPublisher {
    /// Replaced after failed deliveries, see [`KafkaPublisher::renew`].
    producer: RwLock<KafkaProducer>,
    admin: AdminClient<KafkaContext>,
    settings: KafkaSettings,
}

impl KafkaPublisher {
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
        let replication = TopicReplication::Fixed(self.settings.replication_factor);
        let topics = [
            NewTopic::new(&self.settings.topic, self.settings.partitions, replication),
            NewTopic::new(
                &dead_letters,
                self.settings.partitions,
                TopicReplication::Fixed(self.settings.replication_factor),
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
            let record = FutureRecord::to(&self.settings.topic)
                .key(message.key)
                .payload(message.payload);
            // Waits for room in librdkafka's queue, then for the broker.
            producer.send(record, self.settings.delivery_timeout)
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
            self.renew(&producer);
        }
        results
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> anyhow::Result<()> {
        let topic = self.settings.dead_letter_topic();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "error",
                value: Some(reason),
            })
            .insert(Header {
                key: "origin",
                value: Some(&delivery.origin),
            });
        let mut record = FutureRecord::to(&topic)
            .payload(delivery.payload.as_ref())
            .headers(headers);
        if let Some(key) = &delivery.key {
            record = record.key(key.as_ref());
        }
        let producer = self.producer();
        if let Err((err, _)) = producer.send(record, self.settings.delivery_timeout).await {
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
        let topic = self.settings.topic.clone();
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

/// Per-partition bookkeeping of which consumed offsets are finished.
#[derive(Debug, Default)]
struct PartitionOffsets {
    /// Handed to the workers, not yet acknowledged.
    pending: BTreeSet<i64>,
    /// The highest acknowledged offset.
    highest_done: Option<i64>,
    /// The last offset handed to the consumer's offset store.
    stored: Option<i64>,
    /// The lowest offset handed out: where this consumer started reading.
    lowest: Option<i64>,
}

impl PartitionOffsets {
    fn dispatched(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.lowest = Some(self.lowest.map_or(offset, |l| l.min(offset)));
    }

    /// Marks `offset` finished; returns the offset to store if the
    /// committable position moved: every offset up to it is finished.
    fn done(&mut self, offset: i64) -> Option<i64> {
        self.pending.remove(&offset);
        self.highest_done = self.highest_done.max(Some(offset));
        let committable = match self.pending.first() {
            Some(&oldest_pending) => Some(oldest_pending - 1),
            None => self.highest_done,
        }?;
        // Below where reading started, the position is already committed.
        if self.stored.is_some_and(|s| s >= committable)
            || self.lowest.is_some_and(|l| committable < l)
        {
            return None;
        }
        self.stored = Some(committable);
        Some(committable)
    }
}

type Offsets = Arc<Mutex<HashMap<i32, PartitionOffsets>>>;

pub struct KafkaSubscriber {
    /// The only strong reference (acks and the health probe hold weak
    /// ones), so that dropping the subscriber closes the consumer; see Drop.
    consumer: Option<Arc<StreamConsumer<KafkaContext>>>,
    topic: String,
    check_timeout: Duration,
    offsets: Offsets,
    /// Subscribing waits for `next`, so that the topics exist first.
    subscribed: bool,
}

struct KafkaAck {
    consumer: Weak<StreamConsumer<KafkaContext>>,
    offsets: Offsets,
    topic: String,
    partition: i32,
    offset: i64,
}

impl Acknowledge for KafkaAck {
    fn ack(self: Box<Self>) {
        let committable = {
            let mut offsets = self.offsets.lock().expect("BUG: offsets poisoned");
            offsets.entry(self.partition).or_default().done(self.offset)
        };
        let consumer = self.consumer.upgrade();
        if let (Some(offset), Some(consumer)) = (committable, consumer) {
            // Stores offset + 1, the next to read. Fails if the partition was
            // revoked meanwhile; its new owner then processes the message
            // again, which the processor's dedupe absorbs.
            if let Err(err) = consumer.store_offset(&self.topic, self.partition, offset) {
                tracing::debug!(partition = self.partition, offset, error = %err, "offset not stored");
            }
        }
    }
}

impl KafkaSubscriber {
    fn consumer(&self) -> &Arc<StreamConsumer<KafkaContext>> {
        self.consumer
            .as_ref()
            .expect("BUG: the consumer is only taken on drop")
    }
}

impl Drop for KafkaSubscriber {
    /// Closing a consumer waits for the group coordinator, with no limit
    /// when the broker is gone. It must neither block an async thread nor
    /// keep the process from exiting, so it happens on a thread of its own.
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            let _ = std::thread::Builder::new()
                .name("kafka-consumer-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

#[async_trait]
impl Subscriber for KafkaSubscriber {
    async fn next(&mut self) -> anyhow::Result<Option<Delivery>> {
        if !self.subscribed {
            self.consumer()
                .subscribe(&[&self.topic])
                .with_context(|| format!("failed to subscribe to {}", self.topic))?;
            self.subscribed = true;
        }
        let message = self.consumer().recv().await.map_err(|err| match err {
            KafkaError::MessageConsumption(code) => {
                anyhow::anyhow!("kafka consumer error: {code}")
            }
            other => anyhow::Error::new(other),
        })?;
        let (partition, offset) = (message.partition(), message.offset());
        self.offsets
            .lock()
            .expect("BUG: offsets poisoned")
            .entry(partition)
            .or_default()
            .dispatched(offset);
        let ack = KafkaAck {
            consumer: Arc::downgrade(self.consumer()),
            offsets: Arc::clone(&self.offsets),
            topic: self.topic.clone(),
            partition,
            offset,
        };
        Ok(Some(Delivery::new(
            message.key().map(Bytes::copy_from_slice),
            message
                .payload()
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
            format!("{} partition {partition} offset {offset}", self.topic),
            Box::new(ack),
        )))
    }

    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(ConsumerProbe {
            consumer: Arc::downgrade(self.consumer()),
            topic: self.topic.clone(),
            timeout: self.check_timeout,
        })
    }

    async fn close(self: Box<Self>) {
        let consumer = Arc::clone(self.consumer());
        let closed = tokio::task::spawn_blocking(move || {
            if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                consumer.commit_consumer_state(CommitMode::Sync)?;
            }
            consumer.unsubscribe();
            Ok::<_, KafkaError>(())
        })
        .await;
        match closed {
            Ok(Ok(())) => tracing::info!("kafka offsets committed"),
            // The background commit already covered everything stored.
            Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "final offset commit failed"),
            Err(err) => tracing::warn!(error = %err, "final offset commit failed"),
        }
    }
}

/// Health of the consumer's connection.
struct ConsumerProbe {
    consumer: Weak<StreamConsumer<KafkaContext>>,
    topic: String,
    timeout: Duration,
}

#[async_trait]
impl Probe for ConsumerProbe {
    async fn check(&self) -> anyhow::Result<()> {
        let Some(consumer) = self.consumer.upgrade() else {
            anyhow::bail!("the consumer has stopped");
        };
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        // The call blocks: off the async threads.
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&topic), timeout)
                .context("kafka did not answer a metadata request")?;
            match metadata.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => anyhow::bail!("topic {topic} is not available"),
            }
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committable_offset_waits_for_the_oldest_unfinished_message() {
        let mut partition = PartitionOffsets::default();
        for offset in 10..15 {
            partition.dispatched(offset);
        }
        assert_eq!(partition.done(12), None, "10 and 11 are unfinished");
        assert_eq!(partition.done(10), Some(10));
        assert_eq!(partition.done(11), Some(12), "12 finished earlier");
        assert_eq!(partition.done(14), None, "13 is unfinished");
        assert_eq!(partition.done(13), Some(14));
        partition.dispatched(15);
        assert_eq!(partition.done(15), Some(15));
    }

    #[test]
    fn redelivered_offsets_never_move_the_commit_backwards() {
        let mut partition = PartitionOffsets::default();
        partition.dispatched(5);
        assert_eq!(partition.done(5), Some(5));
        // After a rebalance the same offsets come again.
        partition.dispatched(3);
        partition.dispatched(4);
        assert_eq!(partition.done(3), None);
        assert_eq!(partition.done(4), None);
        partition.dispatched(6);
        assert_eq!(partition.done(6), Some(6));
    }
}
