//! The Bus port: publishing outbox messages and consuming them.
//!
//! The contract is at-least-once, the same for every backend:
//! - [`Publisher::publish`] resolves `Ok` only once a message is durable in
//!   the bus; only then does the relay delete its outbox row;
//! - a [`Delivery`] is acknowledged only after the processor's effect is
//!   committed; an unacknowledged delivery comes again (after a restart or a
//!   rebalance), so the processor must be idempotent, and is.
//!
//! Implementations: [`memory`] (embedded default) and [`kafka`]
//! (configured).

pub(crate) mod kafka;
pub(crate) mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::telemetry::trace_context::TraceContext;

/// One message to publish, borrowed from its owner (the outbox relay's
/// claimed rows) for as long as the publish takes, so that it is copied
/// only where the bytes must go: into librdkafka's queue, or into the
/// in-process delivery.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    /// Routes the message (the user id): one key's messages stay in order.
    pub key: &'a [u8],
    /// The message body (JSON), published exactly as given.
    pub payload: &'a [u8],
    /// The trace the message continues: sent with it (on Kafka, as the
    /// `traceparent` and `tracestate` headers).
    pub trace: Option<&'a TraceContext>,
}

/// Why a publish failed; the outbox row stays and is retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PublishError(pub String);

#[async_trait]
pub(crate) trait Publisher: Send + Sync + 'static {
    /// Short name for logs and health checks (`memory`, `kafka`).
    fn backend(&self) -> &'static str;

    /// Makes the bus ready for publishing and consuming (creates missing
    /// topics). Retried with backoff at start-up until it succeeds.
    async fn prepare(&self) -> anyhow::Result<()>;

    /// Publishes the messages in order and reports for each whether the bus
    /// now holds it durably.
    async fn publish(&self, messages: &[Message<'_>]) -> Vec<Result<(), PublishError>>;

    /// How many publishes the outbox relay may have out at once. More than
    /// one only where a publish hands all its messages to the bus, in order,
    /// when its future is first polled, so that a later publish cannot
    /// overtake them.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Parks a message that cannot be processed on the dead-letter topic,
    /// with the reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> anyhow::Result<()>;

    /// Whether the bus is reachable now.
    async fn check(&self) -> anyhow::Result<()>;

    /// How long after it was published a message may still be delivered
    /// (again) to the consumers: the processed messages' ids are kept that
    /// long. `None`: as long as the bus lasts (never pruned).
    async fn redelivery_window(&self) -> anyhow::Result<Option<Duration>>;

    /// Waits until everything published so far is delivered (or `timeout`).
    async fn flush(&self, timeout: Duration);
}

#[async_trait]
pub(crate) trait Subscriber: Send + 'static {
    /// The next message; `Ok(None)` once the bus is closed for good.
    async fn next(&mut self) -> anyhow::Result<Option<Delivery>>;

    /// A health check of the consumer's connection to the bus.
    fn probe(&self) -> Arc<dyn Probe>;

    /// Commits what was acknowledged, then leaves the bus. Called after the
    /// worker pool has finished every delivery it was handed.
    async fn close(self: Box<Self>);
}

/// A health check of one connection.
#[async_trait]
pub(crate) trait Probe: Send + Sync + 'static {
    async fn check(&self) -> anyhow::Result<()>;
}

/// Marks a delivery as done, so that the bus will not deliver it again.
pub(crate) trait Acknowledge: Send + Sync {
    fn ack(self: Box<Self>);
}

/// One consumed message, to be acknowledged once it is processed.
pub(crate) struct Delivery {
    /// The message key (the user id), which routes it to a worker so that
    /// one user's messages are processed in order.
    pub key: Option<Bytes>,
    pub payload: Bytes,
    /// Where it came from, for logs (`partition 3 offset 42`).
    pub origin: String,
    /// The trace it was published in, if it came with one.
    pub trace: Option<TraceContext>,
    /// When the bus took the message, by its own clock (Kafka's message
    /// timestamp), if it says.
    pub published_at: Option<DateTime<Utc>>,
    ack: Box<dyn Acknowledge>,
}

impl Delivery {
    pub(crate) fn new(
        key: Option<Bytes>,
        payload: Bytes,
        origin: String,
        ack: Box<dyn Acknowledge>,
    ) -> Self {
        Self {
            key,
            payload,
            origin,
            trace: None,
            published_at: None,
            ack,
        }
    }

    /// The same delivery, in the trace `trace`.
    pub(crate) fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// The same delivery, taken by the bus at `at`.
    pub(crate) fn published_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.published_at = at;
        self
    }

    /// The message is processed (or parked on the dead-letter topic).
    pub(crate) fn ack(self) {
        self.ack.ack();
    }
}
