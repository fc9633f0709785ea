//! The asynchronous side of the service: once the store is migrated and
//! the bus prepared (each retried with backoff for as long as it takes), it
//! runs the outbox relay and the consumer with its worker pool under the
//! application's supervisor, and stops them in order: the relay first (it
//! drains the outbox, and the in-process bus needs the consumer for that),
//! then the consumer (the pool finishes its queue, the final offsets are
//! committed).
//!
//! Its rooms: [`relay`] moves committed outbox rows onto the bus,
//! [`workers`] is the bounded pool the consumer feeds, [`processor`]
//! applies each message to the store exactly once, and [`prune`] forgets
//! the ids of processed messages the bus can no longer deliver again. The bus below them is a
//! port only: nothing under `bus/` touches the store.

mod processor;
mod prune;
mod relay;
mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bus::{Publisher, Subscriber};
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::store::Store;
use crate::store::retention::EventRetention;
use crate::supervisor::Supervisor;

pub(crate) use processor::EventProcessor;
pub(crate) use relay::OutboxRelay;
use workers::WorkerPool;

pub(crate) struct Pipeline {
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    pub subscriber: Box<dyn Subscriber>,
    /// `None` on an API-only instance (`OUTBOX_RELAY_ENABLED=false`).
    pub relay: Option<OutboxRelay>,
    /// How long processed messages' ids are kept (`PROCESSED_MESSAGES_RETENTION`).
    pub processed_kept_for: crate::config::KeptFor,
    /// How long events are kept (`EVENTS_RETENTION`; `None`: forever).
    pub events_retention: Option<Duration>,
    pub processor: EventProcessor,
    pub workers: usize,
    pub queue_capacity: usize,
    pub metrics: Arc<Metrics>,
    /// Told when the store is ready, so that the API opens.
    pub readiness: Arc<Readiness>,
}

impl Pipeline {
    /// Prepares the store and the bus, then runs the relay and the consumer
    /// as tasks of `supervisor` until `token` is cancelled, and stops them
    /// in order.
    pub(crate) async fn run_until_stopped(
        self,
        supervisor: Supervisor,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let store = Arc::clone(&self.store);
        if !retry_until_done("database migrations", &token, || async {
            Ok(store.migrate().await?)
        })
        .await
        {
            return Ok(());
        }
        self.readiness.mark_store_ready();
        tracing::info!(store = self.store.backend(), "database ready");

        let publisher = Arc::clone(&self.publisher);
        if !retry_until_done("bus preparation", &token, || publisher.prepare()).await {
            return Ok(());
        }
        self.readiness.mark_bus_ready();
        tracing::info!(bus = self.publisher.backend(), "bus ready");

        let relay = self
            .relay
            .map(|relay| supervisor.spawn("outbox relay", |token| relay.run_until_stopped(token)));
        let pruner = prune::Pruner {
            store: Arc::clone(&self.store),
            publisher: Arc::clone(&self.publisher),
            kept_for: self.processed_kept_for,
            metrics: Arc::clone(&self.metrics),
        };
        let pruning = supervisor.spawn("processed message pruning", |token| {
            pruner.run_until_stopped(token)
        });
        let retention = EventRetention {
            store: Arc::clone(&self.store),
            keep: self.events_retention,
            metrics: Arc::clone(&self.metrics),
        };
        let expiry = supervisor.spawn("event retention", |token| {
            retention.run_until_stopped(token)
        });
        let consumer = supervisor.spawn("consumer", move |token| {
            // The workers watch the consumer's token: once it stops
            // fetching, a message that keeps failing is left for
            // redelivery instead of holding up the drain.
            let pool = WorkerPool::start(
                self.workers,
                self.queue_capacity,
                Arc::new(self.processor),
                self.metrics,
                token.clone(),
            );
            workers::run_consumer_until_stopped(self.subscriber, pool, token)
        });

        token.cancelled().await;
        // The relay first: it drains the outbox, and on the in-process bus a
        // publish completes only once the consumer has processed it.
        let relayed = match relay {
            Some(relay) => relay.stop().await,
            None => Ok(()),
        };
        let consumed = consumer.stop().await;
        let pruned = pruning.stop().await;
        let expired = expiry.stop().await;
        relayed.and(consumed).and(pruned).and(expired)
    }
}

/// Retries `attempt` with backoff until it succeeds (`true`) or `token` is
/// cancelled (`false`).
async fn retry_until_done<F, Fut>(
    what: &'static str,
    token: &CancellationToken,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        token.clone(),
    );
    loop {
        let result = tokio::select! {
            () = token.cancelled() => return false,
            result = attempt() => result,
        };
        let Err(err) = result else {
            return true;
        };
        let delay = backoff.next_delay();
        tracing::warn!(
            what,
            error = format!("{err:#}"),
            retry_in_ms = delay.as_millis() as u64,
            "not ready yet; retrying"
        );
        if !backoff.wait(delay).await {
            return false;
        }
    }
}
