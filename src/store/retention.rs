//! The task that keeps `events` within `EVENTS_RETENTION`, and ready for
//! the writes to come.
//!
//! Each round it creates the partitions the next days need (PostgreSQL,
//! see [`super::partitions`]), then, when a retention is set, removes the
//! events older than it: whole partitions first, then the rest in short
//! transactions of [`BATCH`] events, each taking its events from the
//! lists' totals as it commits. A round comes every twentieth of the
//! retention (at least every second, at most every five minutes), and
//! hourly with no retention. Every replica of the service runs it; they
//! take turns on the partitions.
//!
//! Reads by id do not wait for a round: [`expired`] hides an event the
//! moment it is past the retention, even from the caches.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Store;
use crate::metrics::Metrics;

/// Events one transaction deletes one by one: a few milliseconds of
/// SQLite's write lock.
const BATCH: u32 = super::purge::CHUNK;
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(300);
const WITHOUT_RETENTION: Duration = Duration::from_secs(3600);

pub(crate) struct EventRetention {
    pub(crate) store: Arc<dyn Store>,
    /// `EVENTS_RETENTION` (`None`: forever).
    pub(crate) keep: Option<Duration>,
    pub(crate) metrics: Arc<Metrics>,
}

impl EventRetention {
    /// Runs a round now and then until `token` is cancelled.
    pub(crate) async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let interval = self.keep.map_or(WITHOUT_RETENTION, |keep| {
            (keep / 20).clamp(MIN_INTERVAL, MAX_INTERVAL)
        });
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = self.round() => {}
            }
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn round(&self) {
        let now = Utc::now();
        if let Err(err) = self.store.prepare_events(now).await {
            let error = format!("{:#}", anyhow::Error::new(err));
            tracing::warn!(error, "failed to create the partitions of events; retrying");
        }
        let Some(before) = self.keep.and_then(|keep| cut(now, keep)) else {
            return;
        };
        let (removed, failed) = super::expire_events(self.store.as_ref(), before, BATCH).await;
        self.metrics.events_expired.inc_by(removed as u64);
        if let Some(err) = failed {
            let error = format!("{:#}", anyhow::Error::new(err));
            tracing::warn!(error, "failed to remove expired events; retrying");
        }
        if removed > 0 {
            tracing::debug!(events = removed, %before, "removed expired events");
        }
    }
}

/// The time before which events are expired at `now`.
pub(crate) fn cut(now: DateTime<Utc>, keep: Duration) -> Option<DateTime<Utc>> {
    now.checked_sub_signed(chrono::Duration::from_std(keep).ok()?)
}

/// Whether the event `id`, created at `created_at` (when known), is past
/// `keep` at `now`. An id of version 7 tells its creation to the
/// millisecond, so an event can be refused before it is looked up; it
/// counts as expired a second after that, so that it never goes early.
pub(crate) fn expired(
    id: Uuid,
    created_at: Option<DateTime<Utc>>,
    keep: Duration,
    now: DateTime<Utc>,
) -> bool {
    let Some(before) = cut(now, keep) else {
        return false;
    };
    if let Some(created_at) = created_at {
        return created_at < before;
    }
    let Some((seconds, nanos)) = id
        .get_version_num()
        .eq(&7)
        .then(|| id.get_timestamp())
        .flatten()
        .map(|t| t.to_unix())
    else {
        return false;
    };
    DateTime::from_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX), nanos)
        .is_some_and(|minted| minted + chrono::Duration::seconds(1) < before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_expires_by_its_time_or_a_second_after_its_ids() {
        let keep = Duration::from_secs(60);
        let now = Utc::now();
        let id = Uuid::now_v7();
        assert!(!expired(id, None, keep, now));
        assert!(!expired(
            id,
            None,
            keep,
            now + chrono::Duration::seconds(60)
        ));
        assert!(expired(id, None, keep, now + chrono::Duration::seconds(62)));
        let old = now - chrono::Duration::seconds(61);
        assert!(expired(Uuid::new_v4(), Some(old), keep, now));
        assert!(!expired(Uuid::new_v4(), Some(now), keep, now));
        assert!(
            !expired(Uuid::new_v4(), None, keep, now),
            "a random id tells no time"
        );
    }
}
