//! Read-through caching with single-flight loads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::Cache;
use crate::metrics::Metrics;
use crate::store::StoreResult;

/// The value that marks "no such entity": answering 404 from the cache
/// protects the store from repeated lookups of missing ids, and keeps a read
/// that raced a delete from filling the key with the deleted row.
const TOMBSTONE: Bytes = Bytes::from_static(b"");

/// What a key caches; each kind has its own TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    User,
    Event,
}

impl CacheKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Event => "event",
        }
    }
}

/// A load in progress, shared by every reader of the key that missed.
type Flight = Arc<OnceCell<Option<Bytes>>>;

pub struct ReadThrough {
    cache: Arc<dyn Cache>,
    /// Prepended to every key, so that several deployments (or tests) can
    /// share one Redis.
    prefix: String,
    user_ttl: Duration,
    event_ttl: Duration,
    /// Loads in progress by key: concurrent misses on one key wait for one
    /// store read instead of each making their own.
    flights: Mutex<HashMap<String, Flight>>,
    metrics: Arc<Metrics>,
}

impl ReadThrough {
    pub fn new(
        cache: Arc<dyn Cache>,
        prefix: String,
        user_ttl: Duration,
        event_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cache,
            prefix,
            user_ttl,
            event_ttl,
            flights: Mutex::default(),
            metrics,
        }
    }

    /// Keys as the Go service names them (`user:<id>`), after the prefix.
    fn key(&self, kind: CacheKind, id: Uuid) -> String {
        format!("{}{}:{id}", self.prefix, kind.as_str())
    }

    fn ttl(&self, kind: CacheKind) -> Duration {
        match kind {
            CacheKind::User => self.user_ttl,
            CacheKind::Event => self.event_ttl,
        }
    }

    /// The cached JSON of `kind`/`id`, or what `load` returns (then cached).
    /// `None`: the entity does not exist.
    pub async fn get_or_load<F, Fut>(
        &self,
        kind: CacheKind,
        id: Uuid,
        load: F,
    ) -> StoreResult<Option<Bytes>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<Option<Bytes>>>,
    {
        let key = self.key(kind, id);
        let result = match self.cache.get(&key).await {
            Ok(Some(value)) => {
                self.metrics.cache_read(kind.as_str(), "hit");
                return Ok(Some(value).filter(|v| *v != TOMBSTONE));
            }
            Ok(None) => "miss",
            Err(err) => {
                tracing::debug!(error = %err, key, "cache read failed; reading the store");
                "error"
            }
        };
        self.metrics.cache_read(kind.as_str(), result);
        let flight = self.join_flight(&key);
        let loaded = flight
            .get_or_try_init(|| async {
                let value = load().await?;
                let stored = value.clone().unwrap_or(TOMBSTONE);
                if let Err(err) = self.cache.fill(&key, stored, self.ttl(kind)).await {
                    tracing::debug!(error = %err, key, "cache fill failed");
                }
                Ok(value)
            })
            .await
            .cloned();
        self.leave_flight(&key, &flight);
        loaded
    }

    /// Caches the new JSON of an entity that was just written.
    pub async fn put(&self, kind: CacheKind, id: Uuid, value: Bytes) {
        let key = self.key(kind, id);
        self.end_flight(&key);
        if let Err(err) = self.cache.put(&key, value, self.ttl(kind)).await {
            tracing::debug!(error = %err, key, "cache update failed");
        }
    }

    /// Marks entities that were just deleted.
    pub async fn forget(&self, kind: CacheKind, ids: &[Uuid]) {
        for id in ids {
            self.put(kind, *id, TOMBSTONE).await;
        }
    }

    fn join_flight(&self, key: &str) -> Flight {
        let mut flights = self.flights.lock().expect("BUG: flight map poisoned");
        flights.entry(key.to_owned()).or_default().clone()
    }

    /// Removes the flight once it has an answer, unless a write replaced it.
    fn leave_flight(&self, key: &str, flight: &Flight) {
        let mut flights = self.flights.lock().expect("BUG: flight map poisoned");
        if flights
            .get(key)
            .is_some_and(|f| Arc::ptr_eq(f, flight) && f.initialized())
        {
            flights.remove(key);
        }
    }

    /// After a write, readers must not join a load that began before it.
    fn end_flight(&self, key: &str) {
        self.flights
            .lock()
            .expect("BUG: flight map poisoned")
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::cache::memory::MemoryCache;

    fn read_through() -> ReadThrough {
        ReadThrough::new(
            Arc::new(MemoryCache::new(1 << 20)),
            "t:".into(),
            Duration::from_secs(60),
            Duration::from_secs(60),
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test]
    async fn concurrent_misses_on_one_key_make_one_store_read() {
        let cache = read_through();
        let id = Uuid::now_v7();
        let loads = AtomicUsize::new(0);
        let gate = tokio::sync::Notify::new();
        let readers = (0..50).map(|_| {
            cache.get_or_load(CacheKind::User, id, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok(Some(Bytes::from_static(b"{}")))
            })
        });
        let all = futures_util::future::join_all(readers);
        tokio::pin!(all);
        // Let every reader reach the flight, then release the one load.
        tokio::select! {
            _ = &mut all => unreachable!("the load is gated"),
            _ = tokio::task::yield_now() => {}
        }
        gate.notify_waiters();
        let results = all.await;
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap().as_deref() == Some(&b"{}"[..]))
        );
    }

    #[tokio::test]
    async fn a_put_wins_over_a_read_that_loaded_before_it() {
        let cache = read_through();
        let id = Uuid::now_v7();
        let stale = cache.get_or_load(CacheKind::User, id, || async {
            // The write commits and updates the cache while this read is
            // still loading the old row.
            cache
                .put(CacheKind::User, id, Bytes::from_static(b"new"))
                .await;
            Ok(Some(Bytes::from_static(b"old")))
        });
        assert_eq!(stale.await.unwrap().unwrap(), "old");
        let next = cache
            .get_or_load(CacheKind::User, id, || async { panic!("must be a hit") })
            .await;
        assert_eq!(next.unwrap().unwrap(), "new");
    }

    #[tokio::test]
    async fn forgotten_entities_read_as_missing_without_a_store_read() {
        let cache = read_through();
        let id = Uuid::now_v7();
        cache
            .put(CacheKind::Event, id, Bytes::from_static(b"{}"))
            .await;
        cache.forget(CacheKind::Event, &[id]).await;
        let read = cache
            .get_or_load(CacheKind::Event, id, || async { panic!("must be a hit") })
            .await;
        assert_eq!(read.unwrap(), None);
    }
}
