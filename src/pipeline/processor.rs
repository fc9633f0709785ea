//! The event processor: what a worker does with one delivery.
//!
//! It derives each user's activity (counts per type, last event time) in the
//! store, deduplicating by message id in the same transaction, so a message
//! delivered twice is applied once. Failures are sorted:
//! - the store is unavailable: not the message's fault; retried with backoff
//!   for as long as it takes, which stalls this worker and, through its full
//!   queue, the consumer;
//! - anything else (undecodable payload, an error applying it): retried up
//!   to `max_attempts` times, then parked on the dead-letter topic with the
//!   reason, so that one poison message cannot block the ones behind it.
//!
//! Each delivery is processed in a span (`process event`) that continues
//! the trace the message was published in, with the store write in a child
//! span (`activity update`).
//!
//! Once the consumer is told to stop, nothing is retried any more: a message
//! that fails then is left unacknowledged, so that the bus delivers it again
//! after the restart, rather than holding up the shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::bus::{Delivery, Publisher};
use crate::domain::EventMessage;
use crate::metrics::{Metrics, ResultLabels};
use crate::retry::Backoff;
use crate::store::{Store, StoreError, StoreResult};
use crate::telemetry::trace_context;

/// The longest pause between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

pub(crate) struct EventProcessor {
    pub store: Arc<dyn Store>,
    /// Where messages that fail `max_attempts` times go.
    pub dead_letters: Arc<dyn Publisher>,
    pub max_attempts: u32,
    /// The first pause between attempts (less a random part); it doubles
    /// each time.
    pub retry_delay: Duration,
    pub metrics: Arc<Metrics>,
}

/// Why a message was not applied.
enum NotApplied {
    /// It cannot be: park it on the dead-letter topic, with this reason.
    Failed(String),
    /// Retrying stopped because the consumer is stopping.
    Stopped,
}

impl EventProcessor {
    /// Processes (or parks) each delivery, then acknowledges it; once
    /// `token` is cancelled, a delivery that fails is left unacknowledged
    /// instead of retried. The deliveries (taken together from one worker's
    /// queue) go to the store in one call, so that they share transactions
    /// (a few statements for all their messages, see [`Store::write`]); a
    /// message whose part of it failed is then retried on its own, after
    /// the others.
    pub(crate) async fn handle_batch(
        &self,
        deliveries: impl IntoIterator<Item = Delivery>,
        token: &CancellationToken,
    ) {
        // The readable ones: each delivery with its span, and its message.
        let mut taken = Vec::new();
        let mut messages = Vec::new();
        let now = chrono::Utc::now();
        for delivery in deliveries {
            let span = tracing::info_span!(
                "process event",
                otel.kind = "consumer",
                origin = delivery.origin,
            );
            if let Some(trace) = &delivery.trace {
                trace_context::continue_trace(&span, trace);
            }
            match serde_json::from_slice::<EventMessage>(&delivery.payload) {
                Ok(message) => {
                    if let Some(at) = delivery.published_at {
                        self.metrics.event_delay("relayed", message.timestamp, at);
                    }
                    self.metrics.event_delay("consumed", message.timestamp, now);
                    taken.push((delivery, span));
                    messages.push(message);
                }
                Err(err) => {
                    let reason = format!("not an event message: {err}");
                    let failed = Err(NotApplied::Failed(reason));
                    self.settle(delivery, failed, token).instrument(span).await;
                }
            }
        }
        if messages.is_empty() {
            return;
        }
        // Each message's trace shows the shared write as its own step.
        let updates: Vec<Span> = taken
            .iter()
            .zip(&messages)
            .map(|((_, span), message)| {
                tracing::info_span!(parent: span, "activity update", event_id = %message.id)
            })
            .collect();
        let outcomes = self
            .store
            .apply_messages(&messages)
            .instrument(updates[0].clone())
            .await;
        drop(updates);
        for (((delivery, span), message), first) in taken.into_iter().zip(&messages).zip(outcomes) {
            let applied = self
                .apply(message, first, token)
                .instrument(span.clone())
                .await;
            self.settle(delivery, applied, token).instrument(span).await;
        }
    }

    /// Acknowledges the delivery once it is applied or parked.
    async fn settle(
        &self,
        delivery: Delivery,
        applied: Result<(), NotApplied>,
        token: &CancellationToken,
    ) {
        let done = match applied {
            Ok(()) => true,
            Err(NotApplied::Failed(reason)) => self.park(&delivery, &reason, token).await,
            Err(NotApplied::Stopped) => false,
        };
        if done {
            delivery.ack();
        } else {
            tracing::warn!(
                origin = delivery.origin,
                "processing stopped by shutdown; the message is delivered again after restart"
            );
        }
    }

    /// Settles the outcome of the message's first attempt (made with its
    /// batch), retrying as the module says.
    async fn apply(
        &self,
        message: &EventMessage,
        first: StoreResult<bool>,
        token: &CancellationToken,
    ) -> Result<(), NotApplied> {
        let mut backoff = Backoff::new(self.retry_delay, MAX_RETRY_DELAY, token.clone());
        let mut attempts = 0;
        let mut attempt = first;
        loop {
            let err = match attempt {
                Ok(applied) => {
                    if applied {
                        let now = chrono::Utc::now();
                        self.metrics.event_delay("applied", message.timestamp, now);
                    }
                    let result = if applied { "applied" } else { "duplicate" };
                    self.metrics
                        .events_processed
                        .get_or_create(&ResultLabels { result })
                        .inc();
                    tracing::debug!(
                        event_id = %message.id,
                        user_id = %message.user_id,
                        event_type = message.event_type,
                        duplicate = !applied,
                        "event processed"
                    );
                    return Ok(());
                }
                Err(err) => err,
            };
            self.metrics.events_failed.inc();
            if !matches!(err, StoreError::Unavailable(_)) {
                attempts += 1;
                if attempts >= self.max_attempts {
                    return Err(NotApplied::Failed(format!(
                        "failed {attempts} times: {:#}",
                        anyhow::Error::new(err)
                    )));
                }
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                event_id = %message.id,
                attempts,
                retry_in_ms = delay.as_millis() as u64,
                error = format!("{:#}", anyhow::Error::new(err)),
                "event processing failed; retrying"
            );
            if !backoff.wait(delay).await {
                return Err(NotApplied::Stopped);
            }
            let update = tracing::info_span!("activity update", event_id = %message.id);
            attempt = self.store.apply_message(message).instrument(update).await;
        }
    }

    /// Sends the delivery to the dead-letter topic, retrying until the bus
    /// takes it (acknowledging before that would lose the message) or
    /// `token` is cancelled. Returns whether it was parked.
    async fn park(&self, delivery: &Delivery, reason: &str, token: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(self.retry_delay, MAX_RETRY_DELAY, token.clone());
        while let Err(err) = self.dead_letters.dead_letter(delivery, reason).await {
            let delay = backoff.next_delay();
            tracing::warn!(
                origin = delivery.origin,
                error = format!("{err:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "failed to park a dead letter; retrying"
            );
            if !backoff.wait(delay).await {
                return false;
            }
        }
        self.metrics.events_dead_lettered.inc();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use tokio::time::Instant;
    use uuid::Uuid;

    use super::*;
    use crate::bus::Acknowledge;
    use crate::store::sqlite::SqliteStore;

    /// Records that the delivery was acknowledged.
    struct Acked(Arc<AtomicBool>);

    impl Acknowledge for Acked {
        fn ack(self: Box<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A store whose pools are closed: every call fails as unavailable.
    async fn unavailable_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let store = SqliteStore::open(&dir.path().join("closed.db"), 1, Duration::from_secs(1))
            .await
            .expect("open the database");
        store.close().await;
        Arc::new(store)
    }

    fn delivery(payload: Vec<u8>, acked: &Arc<AtomicBool>) -> Delivery {
        Delivery::new(
            None,
            Bytes::from(payload),
            "test message".into(),
            Box::new(Acked(Arc::clone(acked))),
        )
    }

    #[tokio::test]
    async fn a_batch_applies_each_message_once_and_parks_what_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::migrated_in(dir.path(), 1).await;
        let store: Arc<dyn Store> = Arc::new(store);
        let metrics = Arc::new(Metrics::new());
        let (dead_letters, _subscriber) = crate::bus::memory::channel(1);
        let processor = EventProcessor {
            store: Arc::clone(&store),
            dead_letters: Arc::new(dead_letters),
            max_attempts: 3,
            retry_delay: Duration::from_millis(10),
            metrics: Arc::clone(&metrics),
        };
        let user_id = Uuid::now_v7();
        let message = |event_type: &str| EventMessage {
            id: Uuid::now_v7(),
            user_id,
            event_type: event_type.into(),
            data: String::new(),
            timestamp: chrono::Utc::now(),
            trace: None,
        };
        let login = serde_json::to_vec(&message("login")).unwrap();
        let payloads = [
            login.clone(),
            b"not json".to_vec(),
            serde_json::to_vec(&message("click")).unwrap(),
            login,
            serde_json::to_vec(&message("login")).unwrap(),
        ];
        let acked: Vec<Arc<AtomicBool>> = payloads.iter().map(|_| Arc::default()).collect();
        let deliveries = payloads
            .into_iter()
            .zip(&acked)
            .map(|(payload, acked)| delivery(payload, acked));

        processor
            .handle_batch(deliveries, &CancellationToken::new())
            .await;

        assert!(
            acked.iter().all(|a| a.load(Ordering::SeqCst)),
            "all acknowledged"
        );
        let activity = store.get_activity(user_id).await.unwrap();
        assert_eq!(activity.total_events, 3, "the repeat counts once");
        assert_eq!(activity.events_by_type["login"], 2);
        assert_eq!(activity.events_by_type["click"], 1);
        let count = |result| {
            metrics
                .events_processed
                .get_or_create(&ResultLabels { result })
                .get()
        };
        assert_eq!((count("applied"), count("duplicate")), (3, 1));
        assert_eq!(metrics.events_dead_lettered.get(), 1, "the unreadable one");
    }

    #[tokio::test]
    async fn retrying_an_unavailable_store_ends_within_100_ms_of_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = unavailable_store(&dir).await;
        // From here on time only moves when every task waits: what is
        // measured is the processor's waiting, not the machine's load.
        tokio::time::pause();
        let metrics = Arc::new(Metrics::new());
        let (dead_letters, _subscriber) = crate::bus::memory::channel(1);
        let processor = EventProcessor {
            store,
            dead_letters: Arc::new(dead_letters),
            max_attempts: 3,
            retry_delay: Duration::from_secs(10),
            metrics: Arc::clone(&metrics),
        };
        let message = EventMessage {
            id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            event_type: "signup".into(),
            data: String::new(),
            timestamp: chrono::Utc::now(),
            trace: None,
        };
        let acked = Arc::new(AtomicBool::new(false));
        let delivery = Delivery::new(
            None,
            Bytes::from(serde_json::to_vec(&message).unwrap()),
            "test message".into(),
            Box::new(Acked(Arc::clone(&acked))),
        );
        let token = CancellationToken::new();
        let handling = tokio::spawn({
            let token = token.clone();
            async move { processor.handle_batch(vec![delivery], &token).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.events_failed.get() == 0 {
            assert!(Instant::now() < deadline, "the first attempt never failed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let cancelled = Instant::now();
        token.cancel();
        tokio::time::timeout(Duration::from_secs(60), handling)
            .await
            .expect("the processor stops retrying")
            .unwrap();
        let stopped_after = cancelled.elapsed();
        assert!(
            stopped_after < Duration::from_millis(100),
            "stopped {stopped_after:?} after shutdown began"
        );
        assert!(
            !acked.load(Ordering::SeqCst),
            "left unacknowledged, to come again"
        );
        assert_eq!(metrics.events_dead_lettered.get(), 0, "not a dead letter");
        assert_eq!(metrics.events_failed.get(), 1, "tried once, then waited");
    }
}
