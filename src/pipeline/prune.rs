//! Forgetting the ids of processed messages once the bus can no longer
//! deliver them again.
//!
//! The processor records every message's id (`processed_messages`) so
//! that a message delivered twice is applied once. An id matters only
//! while its message can still arrive: on Kafka, as long as the topic
//! keeps it (`retention.ms` plus a segment's age); on the in-process bus,
//! as long as the outbox may publish it again. `PROCESSED_MESSAGES_RETENTION`
//! says how long (`auto`: ask the bus), and this task deletes older ids,
//! oldest first, in short transactions, every quarter of that (at least
//! every second, at most every hour). Every replica runs it: the deletes
//! of two replicas do not get in each other's way.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::bus::Publisher;
use crate::config::KeptFor;
use crate::metrics::Metrics;
use crate::store::Store;

/// Ids one transaction deletes: a few milliseconds of SQLite's write lock.
const BATCH: u32 = 2000;
/// Longest pause between two rounds (and after a failed look-up of the
/// bus's window).
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest pause between two rounds.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Pruner {
    pub(super) store: Arc<dyn Store>,
    pub(super) publisher: Arc<dyn Publisher>,
    pub(super) kept_for: KeptFor,
    pub(super) metrics: Arc<Metrics>,
}

impl Pruner {
    /// Prunes now and then until `token` is cancelled.
    pub(super) async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut told: Option<Option<Duration>> = None;
        loop {
            let window = match self.window().await {
                Ok(window) => window,
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "failed to learn how long the bus may deliver a message again; \
                         processed message ids are not pruned meanwhile"
                    );
                    if pause(&token, MAX_INTERVAL / 12).await {
                        continue;
                    }
                    return Ok(());
                }
            };
            self.metrics
                .processed_ids_kept
                .set(window.map_or(-1, |w| i64::try_from(w.as_secs()).unwrap_or(i64::MAX)));
            if told != Some(window) {
                match window {
                    Some(window) => tracing::info!(
                        kept_for = %humantime::format_duration(window),
                        "processed message ids are kept as long as the bus may deliver them again"
                    ),
                    None => tracing::info!(
                        "the bus keeps messages forever: processed message ids are never pruned"
                    ),
                }
                told = Some(window);
            }
            if let Some(window) = window {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = self.prune(window) => {}
                }
            }
            let interval =
                window.map_or(MAX_INTERVAL, |w| (w / 4).clamp(MIN_INTERVAL, MAX_INTERVAL));
            if !pause(&token, interval).await {
                return Ok(());
            }
        }
    }

    async fn window(&self) -> anyhow::Result<Option<Duration>> {
        match self.kept_for {
            KeptFor::Auto => self.publisher.redelivery_window().await,
            KeptFor::Duration(window) => Ok(Some(window)),
        }
    }

    /// Deletes the ids recorded more than `window` ago, a batch at a time.
    async fn prune(&self, window: Duration) {
        let Ok(window) = chrono::Duration::from_std(window) else {
            return;
        };
        let Some(before) = Utc::now().checked_sub_signed(window) else {
            return;
        };
        let (pruned, failed) = crate::store::delete_in_batches(BATCH, |batch| {
            self.store.prune_processed_messages(before, batch)
        })
        .await;
        if let Some(err) = failed {
            let error = format!("{:#}", anyhow::Error::new(err));
            tracing::warn!(error, "failed to prune processed message ids");
        }
        if pruned > 0 {
            tracing::debug!(ids = pruned, "pruned processed message ids");
        }
    }
}

/// Waits `interval`; `false` if `token` was cancelled first.
async fn pause(token: &CancellationToken, interval: Duration) -> bool {
    tokio::select! {
        () = token.cancelled() => false,
        () = tokio::time::sleep(interval) => true,
    }
}
