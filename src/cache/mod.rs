//! The Cache port and the read-through logic in front of the store.
//!
//! Values are the JSON bodies the API returns, so a hit is answered without
//! touching the store or re-serializing. Consistency rules, shared by every
//! backend:
//! - a read fills the cache only where the key is absent ([`Cache::fill`]),
//! - a write overwrites it with the new value ([`Cache::put`]),
//! - a delete overwrites it with a tombstone,
//!
//! so a slow read that loaded the old row before a write committed can never
//! overwrite what the write put there. Cache failures are logged and the
//! store answers instead: the cache may make requests faster, never fail them.
//!
//! Tiers. Embedded stack: one in-process cache (`memory`). Real stack: an
//! in-process tier (`local`, bounded by the same `CACHE_MEMORY_BYTES`) in
//! front of Redis (`redis`), kept coherent across replicas by invalidations
//! over Redis pub/sub (`invalidation`). Staleness bound: a replica serves a
//! value that another replica's write replaced for at most
//! `CACHE_LOCAL_TTL` (default 1 s), and in the usual case for one pub/sub
//! delivery (well under a millisecond on a LAN); a replica serves its own
//! writes at once. `CACHE_LOCAL_TTL=0` turns the in-process tier off.

mod invalidation;
mod local;
pub(crate) mod memory;
mod read_through;
pub(crate) mod redis;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::cache::CacheConfig;
use crate::metrics::Metrics;
pub(crate) use invalidation::InvalidationListener;
pub(crate) use read_through::{CacheKind, ReadThrough};

/// The caches of one instance, built from the configuration.
pub(crate) struct Caches {
    /// Redis, or the in-process cache on the embedded stack: what health
    /// checks ping.
    pub shared: Arc<dyn Cache>,
    /// The in-process tier in front of Redis (real stack, tier on).
    local: Option<Arc<local::LocalTier>>,
    /// Keeps the in-process tier subscribed (real stack, tier on): a
    /// background task to run.
    pub listener: Option<InvalidationListener>,
}

/// Builds the tiers that `config` asks for, registering their figures in
/// `metrics`. Nothing connects yet: Redis is reached lazily.
pub(crate) fn build(config: &CacheConfig, metrics: &mut Metrics) -> anyhow::Result<Caches> {
    let memory = Arc::new(memory::MemoryCache::new(config.cache_memory_bytes));
    let (shared, local, listener): (Arc<dyn Cache>, _, _) = match &config.redis {
        None => (Arc::clone(&memory) as Arc<dyn Cache>, None, None),
        Some(settings) => {
            let cache = redis::RedisCache::connect_lazy(
                settings.connection.clone(),
                config.cache_prefix.clone(),
                settings.timeout,
            )?;
            let ttl = config.local.cache_local_ttl;
            if ttl.is_zero() {
                (Arc::new(cache) as Arc<dyn Cache>, None, None)
            } else {
                let local = Arc::new(local::LocalTier::new(Arc::clone(&memory), ttl));
                let listener = InvalidationListener::new(
                    settings.connection.clone(),
                    &config.cache_prefix,
                    Arc::clone(&local),
                )?;
                let cache =
                    cache.publishing_invalidations(invalidation::channel(&config.cache_prefix));
                (
                    Arc::new(cache) as Arc<dyn Cache>,
                    Some(local),
                    Some(listener),
                )
            }
        }
    };
    metrics.register_collector(Box::new(stats::InProcessCacheCollector {
        memory,
        local: local.clone(),
    }));
    Ok(Caches {
        shared,
        local,
        listener,
    })
}

impl Caches {
    /// Reads through the shared cache, and through the in-process tier in
    /// front of it if any.
    pub(crate) fn read_through(&self, config: &CacheConfig, metrics: Arc<Metrics>) -> ReadThrough {
        let read_through = ReadThrough::new(
            Arc::clone(&self.shared),
            config.cache_prefix.clone(),
            config.cache_user_ttl,
            config.cache_event_ttl,
            metrics,
        );
        match &self.local {
            Some(local) => read_through.with_local_tier(Arc::clone(local)),
            None => read_through,
        }
    }
}

#[async_trait]
pub(crate) trait Cache: Send + Sync + 'static {
    /// Short name for logs and health checks (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>>;

    /// Stores `value` unless the key already holds one.
    async fn fill(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()>;

    /// Stores `value`, replacing what the key held.
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()>;

    /// Round trip to the cache server (nothing to do in-process).
    async fn ping(&self) -> anyhow::Result<()>;
}
