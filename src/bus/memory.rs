//! In-process bus: the embedded default.
//!
//! Nothing here outlives the process, so a publish is acknowledged only
//! when the consumer has *processed* the message: until then its outbox row
//! stays in the database, and a crash loses nothing (the row is published
//! again after restart and the processor's dedupe absorbs the repeat).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{Acknowledge, Delivery, Message, Probe, PublishError, Publisher, Subscriber};

/// Creates a connected publisher and subscriber whose queue holds up to
/// `capacity` messages (publishers wait when it is full).
pub(crate) fn channel(capacity: usize) -> (MemoryPublisher, MemorySubscriber) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        MemoryPublisher {
            tx: tx.clone(),
            published: AtomicU64::new(0),
        },
        MemorySubscriber {
            tx: tx.downgrade(),
            rx,
        },
    )
}

pub(crate) struct MemoryPublisher {
    tx: mpsc::Sender<Delivery>,
    /// Messages published so far: numbers each delivery's origin, as an
    /// offset does on Kafka, so that its logs can be told apart.
    published: AtomicU64,
}

/// Completes the publisher's wait for this message.
struct Processed(oneshot::Sender<()>);

impl Acknowledge for Processed {
    fn ack(self: Box<Self>) {
        // The publisher may have given up waiting; the row is then simply
        // published again and deduplicated.
        let _ = self.0.send(());
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn prepare(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn publish(&self, messages: &[Message<'_>]) -> Vec<Result<(), PublishError>> {
        let mut waits = Vec::with_capacity(messages.len());
        for message in messages {
            let (done, processed) = oneshot::channel();
            let number = self.published.fetch_add(1, Ordering::Relaxed);
            let delivery = Delivery::new(
                Some(Bytes::copy_from_slice(message.key)),
                Bytes::copy_from_slice(message.payload),
                format!("in-process message {number}"),
                Box::new(Processed(done)),
            )
            .with_trace(message.trace.cloned())
            .published_at(Some(chrono::Utc::now()));
            let sent = self.tx.send(delivery).await.is_ok();
            waits.push((sent, processed));
        }
        let mut results = Vec::with_capacity(messages.len());
        for (sent, processed) in waits {
            results.push(match (sent, processed.await) {
                (true, Ok(())) => Ok(()),
                (false, _) => Err(PublishError("the consumer has stopped".into())),
                (true, Err(_)) => Err(PublishError(
                    "the consumer stopped before processing the message".into(),
                )),
            });
        }
        results
    }

    /// There is no dead-letter topic in-process: the message is logged
    /// whole, with the reason, where an operator can find it.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> anyhow::Result<()> {
        tracing::error!(
            reason,
            origin = delivery.origin,
            payload = %String::from_utf8_lossy(&delivery.payload),
            "message parked as a dead letter"
        );
        Ok(())
    }

    async fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.tx.is_closed(), "the in-process consumer has stopped");
        Ok(())
    }

    /// Nothing outlives the process but the outbox, whose rows are
    /// published again only until the relay has seen them acknowledged:
    /// within seconds, or a long outage's length. A day covers that.
    async fn redelivery_window(&self) -> anyhow::Result<Option<Duration>> {
        Ok(Some(Duration::from_secs(24 * 3600)))
    }

    async fn flush(&self, _timeout: Duration) {}
}

pub(crate) struct MemorySubscriber {
    /// For the health probe; weak, so that it does not keep the queue open.
    tx: mpsc::WeakSender<Delivery>,
    rx: mpsc::Receiver<Delivery>,
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn next(&mut self) -> anyhow::Result<Option<Delivery>> {
        Ok(self.rx.recv().await)
    }

    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(ChannelOpen(self.tx.clone()))
    }

    async fn close(self: Box<Self>) {}
}

/// The in-process consumer is healthy while its queue is open (it closes
/// when the consumer stops).
struct ChannelOpen(mpsc::WeakSender<Delivery>);

#[async_trait]
impl Probe for ChannelOpen {
    async fn check(&self) -> anyhow::Result<()> {
        let open = self.0.upgrade().is_some_and(|tx| !tx.is_closed());
        anyhow::ensure!(open, "the in-process consumer has stopped");
        Ok(())
    }
}
