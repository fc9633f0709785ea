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

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::bus::{Delivery, Publisher};
use crate::domain::EventMessage;
use crate::metrics::{Metrics, ResultLabels};
use crate::store::{Store, StoreError};

/// The longest pause between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

pub struct EventProcessor {
    pub store: Arc<dyn Store>,
    /// Where messages that fail `max_attempts` times go.
    pub dead_letters: Arc<dyn Publisher>,
    pub max_attempts: u32,
    /// The first pause between attempts; it doubles each time.
    pub retry_delay: Duration,
    pub metrics: Arc<Metrics>,
}

impl EventProcessor {
    /// Processes (or parks) the delivery, then acknowledges it.
    pub async fn handle(&self, delivery: Delivery) {
        let failure = match serde_json::from_slice::<EventMessage>(&delivery.payload) {
            Ok(message) => self.apply(&message).await.err(),
            Err(err) => Some(format!("not an event message: {err}")),
        };
        if let Some(reason) = failure {
            self.park(&delivery, &reason).await;
        }
        delivery.ack();
    }

    async fn apply(&self, message: &EventMessage) -> Result<(), String> {
        let mut backoff = Backoff::new(self.retry_delay, MAX_RETRY_DELAY);
        let mut attempts = 0;
        loop {
            let err = match self.store.apply_message(message).await {
                Ok(applied) => {
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
                    return Err(format!(
                        "failed {attempts} times: {:#}",
                        anyhow::Error::new(err)
                    ));
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
            tokio::time::sleep(delay).await;
        }
    }

    /// Sends the delivery to the dead-letter topic, retrying until the bus
    /// takes it: acknowledging before that would lose the message.
    async fn park(&self, delivery: &Delivery, reason: &str) {
        let mut backoff = Backoff::new(self.retry_delay, MAX_RETRY_DELAY);
        while let Err(err) = self.dead_letters.dead_letter(delivery, reason).await {
            let delay = backoff.next_delay();
            tracing::warn!(
                origin = delivery.origin,
                error = format!("{err:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "failed to park a dead letter; retrying"
            );
            tokio::time::sleep(delay).await;
        }
        self.metrics.events_dead_lettered.inc();
    }
}
