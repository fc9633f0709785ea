//! The asynchronous side of the service: once the store is migrated and
//! the bus prepared (each retried with backoff for as long as it takes), it
//! runs the outbox relay and the consumer with its worker pool, and stops
//! them in order: the relay first (it drains the outbox, and the
//! in-process bus needs the consumer for that), then the consumer (the pool
//! finishes its queue, the final offsets are committed).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::bus::outbox::OutboxRelay;
use crate::bus::{Publisher, Subscriber};
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::store::Store;
use crate::worker::{self, EventProcessor, WorkerPool};

pub struct Pipeline {
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    pub subscriber: Box<dyn Subscriber>,
    /// `None` on an API-only instance (`OUTBOX_RELAY_ENABLED=false`).
    pub relay: Option<OutboxRelay>,
    pub processor: EventProcessor,
    pub workers: usize,
    pub queue_capacity: usize,
    pub metrics: Arc<Metrics>,
    /// Told when the store is ready, so that the API opens.
    pub readiness: Arc<Readiness>,
}

impl Pipeline {
    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
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
        tracing::info!(bus = self.publisher.backend(), "bus ready");

        let relay_token = CancellationToken::new();
        let consumer_token = CancellationToken::new();
        let pool = WorkerPool::start(
            self.workers,
            self.queue_capacity,
            Arc::new(self.processor),
            Arc::clone(&self.metrics),
            consumer_token.clone(),
        );
        let mut relay = self
            .relay
            .map(|relay| tokio::spawn(relay.run_until_stopped(relay_token.clone())));
        let mut consumer = tokio::spawn(worker::run_consumer_until_stopped(
            self.subscriber,
            pool,
            consumer_token.clone(),
        ));

        let relay_ended = async {
            match relay.as_mut() {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = token.cancelled() => {}
            ended = relay_ended => {
                consumer_token.cancel();
                let _ = consumer.await;
                ended.context("outbox relay panicked")??;
                anyhow::bail!("outbox relay ended unexpectedly");
            }
            ended = &mut consumer => {
                relay_token.cancel();
                if let Some(relay) = relay {
                    let _ = relay.await;
                }
                ended.context("consumer panicked")??;
                anyhow::bail!("consumer ended unexpectedly");
            }
        }
        relay_token.cancel();
        if let Some(relay) = relay {
            relay.await.context("outbox relay panicked")??;
        }
        consumer_token.cancel();
        consumer.await.context("consumer panicked")??;
        Ok(())
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
