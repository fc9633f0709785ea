//! The consumer side: a bounded worker pool fed by the bus subscriber.
//!
//! Each worker owns a bounded queue; a delivery goes to the queue chosen by
//! hashing its key (the user id), so one user's messages are processed in
//! the order they were consumed while different users proceed in parallel.
//! When the chosen queue is full the consumer waits: consumption pauses
//! (backpressure) and nothing is dropped. A worker takes everything queued
//! for it (up to [`BATCH`]) and applies it in one store call, so that a
//! backlog drains in large transactions.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::processor::EventProcessor;

use crate::bus::{Delivery, Subscriber};
use crate::metrics::Metrics;
use crate::retry::Backoff;

/// Most deliveries a worker takes from its queue at once, to apply them
/// together (see [`EventProcessor::handle_batch`]); a worker takes what is
/// queued, so one delivery at a time waits for nothing.
const BATCH: usize = 128;

pub(super) struct WorkerPool {
    /// One queue per worker.
    queues: Vec<mpsc::Sender<Delivery>>,
    /// Spreads deliveries without a key over the workers.
    next_unkeyed: AtomicUsize,
    workers: TaskTracker,
    metrics: Arc<Metrics>,
}

impl WorkerPool {
    /// Starts `workers` workers sharing `capacity` queued deliveries. Once
    /// `token` is cancelled, the processor stops retrying (see
    /// [`EventProcessor::handle_batch`]); the workers still take every queued
    /// delivery until [`WorkerPool::finish`].
    pub(super) fn start(
        workers: usize,
        capacity: usize,
        processor: Arc<EventProcessor>,
        metrics: Arc<Metrics>,
        token: CancellationToken,
    ) -> Self {
        let workers = workers.max(1);
        let per_worker = capacity.div_ceil(workers).max(1);
        metrics
            .worker_queue_capacity
            .set((per_worker * workers) as i64);
        let tracker = TaskTracker::new();
        let queues = (0..workers)
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Delivery>(per_worker);
                let processor = Arc::clone(&processor);
                let metrics = Arc::clone(&metrics);
                let token = token.clone();
                tracker.spawn(async move {
                    let mut batch = Vec::with_capacity(BATCH);
                    while rx.recv_many(&mut batch, BATCH).await > 0 {
                        let taken = batch.len() as i64;
                        metrics.worker_queue_depth.dec_by(taken);
                        metrics.worker_in_flight.inc_by(taken);
                        processor.handle_batch(batch.drain(..), &token).await;
                        metrics.worker_in_flight.dec_by(taken);
                    }
                });
                tx
            })
            .collect();
        tracker.close();
        Self {
            queues,
            next_unkeyed: AtomicUsize::new(0),
            workers: tracker,
            metrics,
        }
    }

    /// Queues a delivery, waiting while its worker's queue is full.
    pub(super) async fn dispatch(&self, delivery: Delivery) {
        let index = match &delivery.key {
            Some(key) => {
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                (hasher.finish() % self.queues.len() as u64) as usize
            }
            None => self.next_unkeyed.fetch_add(1, Ordering::Relaxed) % self.queues.len(),
        };
        // Counted before it is sent, as a worker may take it at once; so a
        // delivery waiting for room in a full queue counts as queued too.
        self.metrics.events_consumed.inc();
        self.metrics.worker_queue_depth.inc();
        if self.queues[index].send(delivery).await.is_err() {
            // Workers only stop after `finish` drops the queues.
            tracing::error!("BUG: worker stopped while the pool is running");
        }
    }

    /// Lets the workers finish every queued delivery, then returns.
    pub(super) async fn finish(self) {
        drop(self.queues);
        self.workers.wait().await;
    }
}

/// Feeds the pool from the subscriber until `token` is cancelled, then lets
/// the pool finish its queue and closes the subscriber (final commit).
pub(super) async fn run_consumer_until_stopped(
    mut subscriber: Box<dyn Subscriber>,
    pool: WorkerPool,
    token: CancellationToken,
) -> anyhow::Result<()> {
    // Consumer errors are mostly connection trouble that the client
    // recovers from by itself; pause briefly, so that consumption resumes
    // soon after the broker is back.
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(1),
        token.clone(),
    );
    loop {
        let next = tokio::select! {
            biased;
            () = token.cancelled() => break,
            next = subscriber.next() => next,
        };
        match next {
            Ok(Some(delivery)) => {
                backoff.reset();
                pool.dispatch(delivery).await;
            }
            Ok(None) => break,
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = format!("{err:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "consuming failed"
                );
                if !backoff.wait(delay).await {
                    break;
                }
            }
        }
    }
    pool.finish().await;
    subscriber.close().await;
    tracing::info!("consumer stopped");
    Ok(())
}
