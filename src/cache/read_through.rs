//! Read-through caching with single-flight loads, over one or two tiers.
//!
//! With an in-process tier (real stack), a read asks it first, then the
//! shared cache (Redis), then the store; what it finds below the local tier
//! is copied into it under the ticket taken before the read began (see
//! `local`). A write updates the shared cache (which publishes the key),
//! then evicts the key from the local tier: in that order, so that a read
//! of this replica cannot copy the old value after the eviction.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::Cache;
use super::local::{LocalTier, Ticket};
use crate::metrics::Metrics;
use crate::store::StoreResult;

/// The value that marks "no such entity": answering 404 from the cache
/// protects the store from repeated lookups of missing ids, and keeps a read
/// that raced a delete from filling the key with the deleted row.
const TOMBSTONE: Bytes = Bytes::from_static(b"");

/// What a key caches; each kind has its own TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheKind {
    User,
    Event,
}

impl CacheKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Event => "event",
        }
    }
}

/// A load in progress, shared by every reader of the key that missed.
type Flight = Arc<OnceCell<Option<Bytes>>>;

pub(crate) struct ReadThrough {
    cache: Arc<dyn Cache>,
    /// The in-process tier in front of `cache`, when `cache` is shared.
    local: Option<Arc<LocalTier>>,
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
    pub(crate) fn new(
        cache: Arc<dyn Cache>,
        prefix: String,
        user_ttl: Duration,
        event_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cache,
            local: None,
            prefix,
            user_ttl,
            event_ttl,
            flights: Mutex::default(),
            metrics,
        }
    }

    /// Puts `local` in front of the shared cache.
    pub(crate) fn with_local_tier(mut self, local: Arc<LocalTier>) -> Self {
        self.local = Some(local);
        self
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
    pub(crate) async fn get_or_load<F, Fut>(
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
        let ticket = match &self.local {
            Some(local) => {
                if let Some(value) = local.get(&key) {
                    self.metrics.cache_read(kind.as_str(), "hit");
                    return Ok(Some(value).filter(|v| *v != TOMBSTONE));
                }
                local.ticket(&key)
            }
            None => None,
        };
        let result = match self.cache.get(&key).await {
            Ok(Some(value)) => {
                self.metrics.cache_read(kind.as_str(), "hit");
                self.fill_local(&key, kind, &value, ticket);
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
                if let Err(err) = self.cache.fill(&key, stored.clone(), self.ttl(kind)).await {
                    tracing::debug!(error = %err, key, "cache fill failed");
                }
                self.fill_local(&key, kind, &stored, ticket);
                Ok(value)
            })
            .await
            .cloned();
        self.leave_flight(&key, &flight);
        loaded
    }

    /// Copies a value read below the local tier into it, if the ticket
    /// still holds.
    fn fill_local(&self, key: &str, kind: CacheKind, value: &Bytes, ticket: Option<Ticket>) {
        if let (Some(local), Some(ticket)) = (&self.local, ticket) {
            local.fill(key, value.clone(), self.ttl(kind), ticket);
        }
    }

    /// Caches the new JSON of an entity that was just written.
    pub(crate) async fn put(&self, kind: CacheKind, id: Uuid, value: Bytes) {
        let key = self.key(kind, id);
        self.end_flight(&key);
        if let Err(err) = self.cache.put(&key, value, self.ttl(kind)).await {
            tracing::debug!(error = %err, key, "cache update failed");
        }
        // After the shared tier has the new value (or failed to take it).
        if let Some(local) = &self.local {
            local.evict(&key);
        }
    }

    /// Marks entities that were just deleted.
    pub(crate) async fn forget(&self, kind: CacheKind, ids: &[Uuid]) {
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

    /// A read-through with an in-process tier (on) in front of `shared`.
    fn two_tiers(shared: Arc<MemoryCache>) -> (ReadThrough, Arc<LocalTier>) {
        let local = Arc::new(LocalTier::new(
            Arc::new(MemoryCache::new(1 << 20)),
            Duration::from_secs(60),
        ));
        local.enable();
        let read_through = ReadThrough::new(
            shared,
            "t:".into(),
            Duration::from_secs(60),
            Duration::from_secs(60),
            Arc::new(Metrics::new()),
        )
        .with_local_tier(Arc::clone(&local));
        (read_through, local)
    }

    #[tokio::test]
    async fn reads_are_answered_by_the_local_tier_once_filled() {
        let shared = Arc::new(MemoryCache::new(1 << 20));
        let (cache, _) = two_tiers(Arc::clone(&shared));
        let id = Uuid::now_v7();
        let first = cache
            .get_or_load(CacheKind::User, id, || async {
                Ok(Some(Bytes::from_static(b"v1")))
            })
            .await;
        assert_eq!(first.unwrap().unwrap(), "v1");
        // Changed behind the tiers' back: only an eviction would show it.
        shared.insert(
            &format!("t:user:{id}"),
            Bytes::from_static(b"v2"),
            Duration::from_secs(60),
        );
        let second = cache
            .get_or_load(CacheKind::User, id, || async { panic!("must be a hit") })
            .await;
        assert_eq!(second.unwrap().unwrap(), "v1");
    }

    #[tokio::test]
    async fn with_a_local_tier_a_put_wins_over_a_read_that_loaded_before_it() {
        let shared = Arc::new(MemoryCache::new(1 << 20));
        let (cache, local) = two_tiers(Arc::clone(&shared));
        let id = Uuid::now_v7();
        let key = format!("t:user:{id}");
        let stale = cache.get_or_load(CacheKind::User, id, || async {
            cache
                .put(CacheKind::User, id, Bytes::from_static(b"new"))
                .await;
            Ok(Some(Bytes::from_static(b"old")))
        });
        assert_eq!(stale.await.unwrap().unwrap(), "old");
        assert!(local.get(&key).is_none(), "the old value was not copied");
        for _ in 0..2 {
            let next = cache
                .get_or_load(CacheKind::User, id, || async { panic!("must be a hit") })
                .await;
            assert_eq!(next.unwrap().unwrap(), "new");
        }
        assert_eq!(local.get(&key).unwrap(), "new");
    }

    #[tokio::test]
    async fn an_invalidation_during_a_read_keeps_its_value_out_of_the_local_tier() {
        let shared = Arc::new(MemoryCache::new(1 << 20));
        let (cache, local) = two_tiers(Arc::clone(&shared));
        let id = Uuid::now_v7();
        let key = format!("t:user:{id}");
        let read = cache.get_or_load(CacheKind::User, id, || async {
            // Another replica's write lands and its invalidation arrives
            // while this read holds the old row.
            shared.insert(&key, Bytes::from_static(b"new"), Duration::from_secs(60));
            local.evict_invalidated(&key);
            Ok(Some(Bytes::from_static(b"old")))
        });
        assert_eq!(read.await.unwrap().unwrap(), "old");
        assert!(local.get(&key).is_none());
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
