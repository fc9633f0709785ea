//! An idle consumer's rest. librdkafka fetches without pause, and a broker
//! that holds each fetch for the whole `KAFKA_FETCH_WAIT` whatever arrives
//! (tansu does) answers an empty one every 10 ms per idle consumer: a third
//! of a 2-core machine. So after a quiet spell the consumer asks the broker
//! where its partitions end; if it has read them all, it pauses them. It
//! looks again every `KAFKA_IDLE_FETCH_INTERVAL` (messages from other
//! publishers), or at once when this process's publisher delivers (its own
//! events, which must not wait out the interval).
//!
//! A look never pauses a consumer that is behind: pausing drops the fetch
//! in flight, and a consumer paused while it drains a backlog would fetch
//! the same messages again and again.
//!
//! A look asks where the partitions end; where the consumer has not yet
//! read a partition, also where the group starts in it (its committed
//! offset, or the partition's first one). Brokers answer those per
//! partition, and tansu plans an SQL statement for each, so a look also
//! remembers the ends it found read: while they stay where they were (and
//! no rebalance came between), nothing was written since, and the ends
//! alone tell.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use super::consumer::release;
use super::context::KafkaContext;

type KafkaConsumer = StreamConsumer<KafkaContext>;

/// The shortest quiet spell before a look: enough fetches come back empty
/// in it that a consumer that is behind has received something.
const MIN_QUIET: Duration = Duration::from_millis(100);

pub(super) struct Rest {
    /// How often a resting consumer looks for others' messages; zero never
    /// rests.
    interval: Duration,
    /// How long without a message before a look.
    quiet: Duration,
    /// Limit of each broker request a look makes.
    timeout: Duration,
    /// Told when this process's publisher delivered.
    published: Arc<Notify>,
    /// The partitions paused by the rest, resumed when it ends. librdkafka
    /// keeps a partition paused across a rebalance, so it is these that are
    /// resumed, not the assignment of the moment.
    resting: Option<TopicPartitionList>,
    /// The ends of the last look that found every partition read, and the
    /// consumer's rebalance count then.
    read: Option<(u64, TopicPartitionList)>,
}

impl Rest {
    pub(super) fn new(
        interval: Duration,
        fetch_wait: Duration,
        timeout: Duration,
        published: Arc<Notify>,
    ) -> Self {
        Self {
            interval,
            quiet: (fetch_wait * 2).max(MIN_QUIET),
            timeout,
            published,
            resting: None,
            read: None,
        }
    }

    /// The next message, resting meanwhile if there is none to read.
    pub(super) async fn recv<'c>(
        &mut self,
        consumer: &'c Arc<KafkaConsumer>,
    ) -> Result<BorrowedMessage<'c>, KafkaError> {
        if self.interval.is_zero() {
            return consumer.recv().await;
        }
        // Under load a message is already queued: no timer for it.
        if let Some(message) = consumer.recv().now_or_never() {
            return message;
        }
        let published = Arc::clone(&self.published);
        loop {
            let resting = self.resting.is_some();
            let wait = if resting { self.interval } else { self.quiet };
            tokio::select! {
                message = consumer.recv() => {
                    // Only what was queued before the pause arrives while
                    // resting; resume all the same.
                    self.wake(consumer);
                    return message;
                }
                () = published.notified(), if resting => self.look(consumer).await,
                () = tokio::time::sleep(wait) => self.look(consumer).await,
            }
        }
    }

    /// Resumes what the rest paused. Kept for the next try if librdkafka
    /// refuses (it does not for an assigned or unassigned partition).
    fn wake(&mut self, consumer: &KafkaConsumer) {
        if let Some(paused) = self.resting.take() {
            match consumer.resume(&paused) {
                Ok(()) => tracing::debug!("kafka consumer resumed"),
                Err(err) => {
                    tracing::warn!(error = %err, "failed to resume the kafka consumer");
                    self.resting = Some(paused);
                }
            }
        }
    }

    /// Rests if there is nothing to read, else keeps (or starts) fetching.
    async fn look(&mut self, consumer: &Arc<KafkaConsumer>) {
        // Resume before asking: librdkafka's broker thread notices a resume
        // only when something else wakes it, and the look's request does.
        // Resuming after a look that found messages cost 100 ms each.
        self.wake(consumer);
        if self.resting.is_some() {
            return;
        }
        let looking = Arc::clone(consumer);
        let timeout = self.timeout;
        let rebalances = consumer.context().rebalances();
        let known = self
            .read
            .take()
            .and_then(|(then, ends)| (then == rebalances).then_some(ends));
        let read_all = tokio::task::spawn_blocking(move || {
            let read_all = read_all(&looking, timeout, known.as_ref());
            release(looking);
            read_all
        })
        .await;
        match read_all {
            // The ends name every assigned partition; pausing ignores
            // their offsets.
            Ok(Ok(Some(ends))) => match consumer.pause(&ends) {
                Ok(()) => {
                    tracing::debug!("kafka consumer read every partition; resting");
                    self.resting = Some(ends.clone());
                    self.read = Some((rebalances, ends));
                }
                Err(err) => tracing::warn!(error = %err, "failed to pause the kafka consumer"),
            },
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "kafka consumer could not look for messages; fetching")
            }
            Err(err) => tracing::warn!(error = %err, "kafka consumer's look failed"),
        }
    }
}

/// The ends of the consumer's assigned partitions if it has read every
/// one of them to the end, `None` if it has not, or cannot tell
/// (nothing assigned, an end or a start unknown). `known`: the ends of an
/// earlier look that found them read, with no rebalance since. Blocks on
/// broker requests.
fn read_all(
    consumer: &KafkaConsumer,
    timeout: Duration,
    known: Option<&TopicPartitionList>,
) -> KafkaResult<Option<TopicPartitionList>> {
    let assigned = consumer.assignment()?;
    if assigned.count() == 0 {
        return Ok(None);
    }
    // The next offset each partition will be written at (ListOffsets,
    // LATEST), asked after the quiet spell so that it counts every message
    // published before the look.
    let mut latest = assigned;
    latest.set_all_offsets(Offset::End)?;
    let ends = consumer.offsets_for_times(latest, timeout)?;
    if known.is_some_and(|known| unchanged(&ends, known)) {
        return Ok(Some(ends));
    }
    // The next offset to deliver, for each partition a message came from.
    let positions = consumer.position()?;
    let mut unpositioned = TopicPartitionList::new();
    for elem in positions.elements() {
        if !matches!(elem.offset(), Offset::Offset(_)) {
            unpositioned.add_partition(elem.topic(), elem.partition());
        }
    }
    // Where the others start: the group's committed offset.
    let committed = if unpositioned.count() == 0 {
        unpositioned
    } else {
        consumer.committed_offsets(unpositioned, timeout)?
    };
    for end in ends.elements() {
        let (topic, partition) = (end.topic(), end.partition());
        let (Ok(()), Offset::Offset(end)) = (end.error(), end.offset()) else {
            return Ok(None);
        };
        let next = [&positions, &committed].into_iter().find_map(|list| {
            match list.find_partition(topic, partition)?.offset() {
                Offset::Offset(next) => Some(next),
                _ => None,
            }
        });
        let start = match next {
            Some(next) => next,
            // Nothing committed: the group starts at the beginning
            // (`auto.offset.reset=earliest`), wherever retention left it.
            None => consumer.fetch_watermarks(topic, partition, timeout)?.0,
        };
        if start < end {
            return Ok(None);
        }
    }
    Ok(Some(ends))
}

/// Whether every end in `ends` is known, and where `known` has it.
fn unchanged(ends: &TopicPartitionList, known: &TopicPartitionList) -> bool {
    ends.elements().iter().all(|end| {
        end.error().is_ok()
            && matches!(end.offset(), Offset::Offset(_))
            && known
                .find_partition(end.topic(), end.partition())
                .is_some_and(|was| was.offset() == end.offset())
    })
}
