//! The Kafka subscriber: a consumer in group `KAFKA_GROUP_ID` whose offsets
//! are stored only when a delivery is acknowledged, committed in the
//! background and once more on close; and the probe of its connection.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, Headers as _};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaSettings;
use super::context::KafkaContext;
use super::offsets::Offsets;
use crate::bus::{Acknowledge, Delivery, Probe, Subscriber};
use crate::telemetry::trace_context::{TRACEPARENT, TRACESTATE, TraceContext};

type KafkaConsumer = StreamConsumer<KafkaContext>;

/// Consumes the topic for the worker pool.
pub(crate) struct KafkaSubscriber {
    /// The only strong reference (acks and the health probe hold weak
    /// ones), so that dropping the subscriber closes the consumer; see Drop.
    consumer: Option<Arc<KafkaConsumer>>,
    /// Where the health probe finds the consumer of the moment: it is
    /// replaced after a fatal error (see [`KafkaSubscriber::renew`]).
    current: Arc<Mutex<Weak<KafkaConsumer>>>,
    settings: KafkaSettings,
    /// Subscribing waits for `next`, so that the topics exist first.
    subscribed: bool,
}

struct KafkaAck {
    consumer: Weak<StreamConsumer<KafkaContext>>,
    offsets: Offsets,
    topic: String,
    partition: i32,
    /// The holding of the partition the message was handed out in.
    holding: u64,
    offset: i64,
}

impl Acknowledge for KafkaAck {
    fn ack(self: Box<Self>) {
        let committable = self.offsets.lock().expect("BUG: offsets poisoned").done(
            self.partition,
            self.holding,
            self.offset,
        );
        let consumer = self.consumer.upgrade();
        if let (Some(offset), Some(consumer)) = (committable, consumer) {
            // Stores offset + 1, the next to read. Fails if the partition was
            // revoked meanwhile; its new owner then processes the message
            // again, which the processor's dedupe absorbs.
            if let Err(err) = consumer.store_offset(&self.topic, self.partition, offset) {
                tracing::debug!(partition = self.partition, offset, error = %err, "offset not stored");
            }
            release(consumer);
        }
    }
}

/// Messages librdkafka tries to keep fetched ahead, per partition.
const QUEUED_MIN_MESSAGES: u32 = 10_000;

/// Kilobytes of fetched messages librdkafka holds at most, for all
/// partitions of the consumer together.
const QUEUED_MAX_KBYTES: u32 = 4_096;

/// The consumer group, and this replica's static member name in it if one
/// is set (`KAFKA_GROUP_INSTANCE_ID`): a restarted replica then takes back
/// its partitions as the same member. Without one it joins as a new member,
/// and its partitions wait until the group drops the old one
/// (`KAFKA_SESSION_TIMEOUT` after its last heartbeat).
///
/// Partitions are assigned cooperatively (`cooperative-sticky`): a
/// rebalance moves only the partitions that must move, and the others are
/// read on meanwhile, where the eager protocol stops every member of the
/// group at each join and leave of a rolling restart.
fn join_group(config: &mut ClientConfig, group_id: &str, instance_id: Option<&str>) {
    config
        .set("group.id", group_id)
        .set("partition.assignment.strategy", "cooperative-sticky");
    if let Some(instance_id) = instance_id {
        config.set("group.instance.id", instance_id);
    }
}

/// A consumer in the group, with offsets bookkeeping of its own (in its
/// context); it does not connect until used.
fn create_consumer(settings: &KafkaSettings) -> anyhow::Result<KafkaConsumer> {
    let mut config = settings.client_config();
    join_group(
        &mut config,
        &settings.kafka.group_id,
        settings.kafka.group_instance_id.as_deref(),
    );
    config
        // Offsets are stored after processing (see Acknowledge) and the
        // stored ones committed every second and on close.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        // A new group starts at the beginning: nothing published before it
        // first joined is skipped.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "session.timeout.ms",
            settings.kafka.session_timeout.as_millis().to_string(),
        )
        // The longest a fetch waits at the broker while nothing
        // arrives. The broker answers as soon as a message does
        // (`fetch.min.bytes` is 1), so this costs no latency: it sets
        // how many empty fetches an idle consumer sends, two a second
        // per broker at the default.
        .set(
            "fetch.wait.max.ms",
            settings.kafka.fetch_wait.as_millis().to_string(),
        )
        // What librdkafka fetches ahead of the workers: by default up
        // to 100,000 messages or 64 MiB, all resident while a backlog
        // drains. A few MiB is seconds of work for the workers, which
        // take at most WORKER_QUEUE_CAPACITY at a time anyway.
        .set("queued.min.messages", QUEUED_MIN_MESSAGES.to_string())
        .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES.to_string())
        .set("statistics.interval.ms", "5000")
        .create_with_context(KafkaContext::consumer(Arc::clone(&settings.metrics)))
        .context("invalid Kafka consumer settings")
}

impl KafkaSubscriber {
    /// Creates the consumer; it does not connect until used.
    pub(super) fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let consumer = Arc::new(create_consumer(settings)?);
        Ok(Self {
            current: Arc::new(Mutex::new(Arc::downgrade(&consumer))),
            consumer: Some(consumer),
            settings: settings.clone(),
            subscribed: false,
        })
    }

    fn consumer(&self) -> &Arc<KafkaConsumer> {
        self.consumer
            .as_ref()
            .expect("BUG: the consumer is only taken on drop")
    }

    /// Replaces the consumer once librdkafka has declared it failed for
    /// good: it then delivers nothing more, ever. (Seen: a static member
    /// whose session timed out while a broker was down, fenced when its
    /// commit of the lost partitions went out.) The new one joins the
    /// group afresh, as the same static member if there is one, and reads
    /// on from the group's commits; acknowledgements of the old one's
    /// messages store nothing.
    fn renew(&mut self) -> anyhow::Result<()> {
        let fresh = Arc::new(create_consumer(&self.settings)?);
        *self.current.lock().expect("BUG: consumer slot poisoned") = Arc::downgrade(&fresh);
        if let Some(failed) = self.consumer.replace(fresh) {
            release(failed);
        }
        self.subscribed = false;
        tracing::info!("kafka consumer recreated");
        Ok(())
    }
}

impl Drop for KafkaSubscriber {
    /// Closing a consumer waits for the group coordinator, with no limit
    /// when the broker is gone. It must neither block an async thread nor
    /// keep the process from exiting, so it happens on a thread of its own.
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            release(consumer);
        }
    }
}

/// Drops a reference to the consumer; the last one closes it on a thread
/// of its own (see Drop above). Whoever holds a reference for a while (an
/// ack, the probe) lets go of it here, since the subscriber may be gone by
/// then, and a blocked async or blocking thread would hold up the
/// runtime's shutdown.
fn release(consumer: Arc<KafkaConsumer>) {
    if let Some(consumer) = Arc::into_inner(consumer) {
        let _ = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || drop(consumer));
    }
}

#[async_trait]
impl Subscriber for KafkaSubscriber {
    async fn next(&mut self) -> anyhow::Result<Option<Delivery>> {
        if !self.subscribed {
            let topic = &self.settings.kafka.topic;
            self.consumer()
                .subscribe(&[topic])
                .with_context(|| format!("failed to subscribe to {topic}"))?;
            self.subscribed = true;
        }
        let message = match self.consumer().recv().await {
            Ok(message) => message,
            Err(err) => {
                if let Some((code, reason)) = self.consumer().client().fatal_error() {
                    tracing::error!(error = %code, reason, "the kafka consumer failed fatally; recreating it");
                    self.renew()?;
                }
                return Err(match err {
                    KafkaError::MessageConsumption(code)
                    | KafkaError::MessageConsumptionFatal(code) => {
                        anyhow::anyhow!("kafka consumer error: {code}")
                    }
                    other => anyhow::Error::new(other),
                });
            }
        };
        let topic = &self.settings.kafka.topic;
        let (partition, offset) = (message.partition(), message.offset());
        let offsets = self.consumer().context().offsets();
        let holding = offsets
            .lock()
            .expect("BUG: offsets poisoned")
            .dispatched(partition, offset);
        let trace = message.headers().and_then(trace_context);
        let ack = KafkaAck {
            consumer: Arc::downgrade(self.consumer()),
            offsets: Arc::clone(offsets),
            topic: topic.clone(),
            partition,
            holding,
            offset,
        };
        Ok(Some(
            Delivery::new(
                message.key().map(Bytes::copy_from_slice),
                message
                    .payload()
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default(),
                format!("{topic} partition {partition} offset {offset}"),
                Box::new(ack),
            )
            .with_trace(trace)
            .published_at(
                message
                    .timestamp()
                    .to_millis()
                    .and_then(chrono::DateTime::from_timestamp_millis),
            ),
        ))
    }

    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(ConsumerProbe {
            consumer: Arc::clone(&self.current),
            topic: self.settings.kafka.topic.clone(),
            timeout: self.settings.check_timeout,
            // A crashed member's partitions go to the others within the
            // session timeout; twice that without progress is no rebalance.
            stall_after: self.settings.kafka.session_timeout * 2,
            stall: Mutex::default(),
        })
    }

    async fn close(self: Box<Self>) {
        let consumer = Arc::clone(self.consumer());
        let closed = tokio::task::spawn_blocking(move || {
            let closed = if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                consumer.commit_consumer_state(CommitMode::Sync)
            } else {
                Ok(())
            };
            consumer.unsubscribe();
            release(consumer);
            closed
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

/// The trace a message was published in, from its W3C headers; none when
/// it has no valid `traceparent` (older messages, other producers).
fn trace_context(headers: &BorrowedHeaders) -> Option<TraceContext> {
    let mut traceparent = None;
    let mut tracestate = None;
    for header in headers.iter() {
        let value = header.value.and_then(|v| std::str::from_utf8(v).ok());
        match header.key {
            TRACEPARENT => traceparent = value,
            TRACESTATE => tracestate = value,
            _ => {}
        }
    }
    TraceContext::parse(traceparent?, tracestate)
}

/// Health of the consumer: its connection, and whether the group gets on
/// with the messages while this consumer holds no partition.
struct ConsumerProbe {
    consumer: Arc<Mutex<Weak<KafkaConsumer>>>,
    topic: String,
    timeout: Duration,
    /// How long the group may stand still with messages waiting while
    /// this consumer holds no partition before it is reported.
    stall_after: Duration,
    stall: Mutex<Stall>,
}

/// What a consumer without partitions saw of its group in the last probes.
#[derive(Debug, Default)]
struct Stall {
    /// The sum of the group's committed offsets at the last probe.
    committed: Option<i64>,
    /// Since when the group has not moved with messages waiting.
    since: Option<tokio::time::Instant>,
}

/// What a probe found of the group, from a consumer holding no partition.
#[derive(Debug, Clone, Copy)]
struct GroupPosition {
    /// Messages after the group's committed offsets.
    waiting: i64,
    /// The sum of the committed offsets (it grows while anyone processes).
    committed: i64,
}

/// What a probe found of the group.
#[derive(Debug)]
enum Found {
    /// This consumer holds partitions.
    Holding,
    /// It holds none; the group's position.
    Group(GroupPosition),
    /// It holds none, and the group's offsets could not be read (as while
    /// a rebalance is under way).
    Unreadable(String),
}

impl Stall {
    /// Takes one probe's finding at `now`; an error once the group has
    /// stood still with messages waiting (or unreadable) for longer than
    /// `after`, while this consumer holds no partition.
    fn observe(
        &mut self,
        found: Found,
        now: tokio::time::Instant,
        after: Duration,
    ) -> anyhow::Result<()> {
        let stands_still = match found {
            Found::Holding => {
                *self = Self::default();
                return Ok(());
            }
            Found::Group(group) if group.waiting == 0 => {
                *self = Self::default();
                return Ok(());
            }
            Found::Group(group) if self.committed != Some(group.committed) => {
                self.committed = Some(group.committed);
                self.since = Some(now);
                return Ok(());
            }
            Found::Group(group) => format!(
                "its group has {} messages waiting and has committed nothing",
                group.waiting
            ),
            Found::Unreadable(err) => format!("its group's offsets cannot be read ({err})"),
        };
        let still = now - *self.since.get_or_insert(now);
        if still > after {
            anyhow::bail!(
                "this consumer holds no partition, and {stands_still}, for {} s (a member \
                 that is gone, or a rebalance that does not end, may hold them)",
                still.as_secs()
            );
        }
        Ok(())
    }
}

/// What a probe finds of the group on `topic` (all its partitions).
fn group_position_without_partitions(
    consumer: &KafkaConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Found {
    if consumer.assignment().is_ok_and(|held| held.count() > 0) {
        return Found::Holding;
    }
    match group_position(consumer, topic, partitions, timeout) {
        Ok(group) => Found::Group(group),
        Err(err) => Found::Unreadable(err.to_string()),
    }
}

/// Reads the group's offsets and the partitions' ends, all within
/// `timeout` (each request gets what is left of it).
fn group_position(
    consumer: &KafkaConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<GroupPosition> {
    let deadline = std::time::Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| anyhow::anyhow!("out of time"))
    };
    let mut wanted = rdkafka::TopicPartitionList::new();
    for &partition in partitions {
        wanted.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(wanted, left()?)?;
    let mut group = GroupPosition {
        waiting: 0,
        committed: 0,
    };
    for element in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, element.partition(), left()?)?;
        // No commit yet: the group starts at the earliest (auto.offset.reset).
        let at = match element.offset() {
            rdkafka::Offset::Offset(at) => at,
            _ => low,
        };
        group.waiting += (high - at).max(0);
        group.committed += at;
    }
    Ok(group)
}

#[async_trait]
impl Probe for ConsumerProbe {
    async fn check(&self) -> anyhow::Result<()> {
        let consumer = self
            .consumer
            .lock()
            .expect("BUG: consumer slot poisoned")
            .upgrade();
        let Some(consumer) = consumer else {
            anyhow::bail!("the consumer has stopped");
        };
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        // The calls block: off the async threads.
        let found = tokio::task::spawn_blocking(move || {
            let found = (|| {
                let metadata = consumer
                    .fetch_metadata(Some(&topic), timeout / 2)
                    .context("kafka did not answer a metadata request")?;
                let partitions: Vec<i32> = match metadata.topics().first() {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        t.partitions().iter().map(|p| p.id()).collect()
                    }
                    _ => anyhow::bail!("topic {topic} is not available"),
                };
                // Within the probe's time limit, after the metadata's half.
                Ok(group_position_without_partitions(
                    &consumer,
                    &topic,
                    &partitions,
                    timeout / 3,
                ))
            })();
            release(consumer);
            found
        })
        .await??;
        self.stall
            .lock()
            .expect("BUG: stall state poisoned")
            .observe(found, tokio::time::Instant::now(), self.stall_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_without_partitions_is_reported_once_its_group_stands_still() {
        let after = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let group = |waiting, committed| Found::Group(GroupPosition { waiting, committed });
        let mut stall = Stall::default();
        // Others process: the committed offsets move.
        for (s, committed) in [(0, 100), (30, 120), (90, 150), (200, 400)] {
            assert!(stall.observe(group(50, committed), at(s), after).is_ok());
        }
        // They stop: reported once the group stood still longer than `after`.
        assert!(stall.observe(group(50, 400), at(230), after).is_ok());
        assert!(stall.observe(group(50, 400), at(260), after).is_ok());
        let err = stall.observe(group(50, 400), at(261), after).unwrap_err();
        assert!(err.to_string().contains("50 messages waiting"), "{err}");
        // Nothing waiting, or partitions held again: healthy, and counted afresh.
        assert!(stall.observe(group(0, 400), at(300), after).is_ok());
        assert!(stall.observe(group(50, 400), at(310), after).is_ok());
        assert!(stall.observe(Found::Holding, at(500), after).is_ok());
        assert!(stall.observe(group(50, 400), at(510), after).is_ok());
        assert!(stall.observe(group(50, 400), at(560), after).is_ok());
        // Offsets that cannot be read (a rebalance) count as standing still.
        let unreadable = || Found::Unreadable("timed out".into());
        let mut stall = Stall::default();
        assert!(stall.observe(unreadable(), at(0), after).is_ok());
        assert!(stall.observe(unreadable(), at(60), after).is_ok());
        let err = stall.observe(unreadable(), at(61), after).unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }

    #[test]
    fn a_static_member_name_is_set_only_when_configured() {
        let mut config = ClientConfig::new();
        join_group(&mut config, "workers", None);
        assert_eq!(config.get("group.id"), Some("workers"));
        assert_eq!(config.get("group.instance.id"), None);
        assert_eq!(
            config.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );

        join_group(&mut config, "workers", Some("highload-7d9f-abcde"));
        assert_eq!(config.get("group.instance.id"), Some("highload-7d9f-abcde"));
    }
}
