//! In-process cache (moka), bounded in bytes, with a TTL per entry: the
//! only cache on the embedded stack, and the store of the in-process tier
//! in front of Redis on the real stack (see `local`).
//!
//! Bytes, not entries: an event body may be up to 64 KiB, so a bound by
//! count would let the cache grow to gigabytes. Each entry weighs its key,
//! its value and an estimate of moka's own bookkeeping.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache as MokaCache;

use super::Cache;

/// A cached value and how long it may live.
#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

/// Expires each entry after its own TTL, set when it was written.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// What an entry costs the process beyond the bytes of its key and value:
/// moka's node, hash table slot, LRU, write-order and timer-wheel links,
/// the `Entry` itself and the allocator's rounding of each. Measured as the
/// growth of the resident set per entry of user-sized values (a 41-byte key
/// and a 218-byte value cost 727 bytes: 40,000 entries against 2,500), so
/// that `CACHE_MEMORY_BYTES` bounds what the cache holds in memory, not
/// only its payload.
const ENTRY_OVERHEAD: usize = 470;

/// The bytes an entry is counted as.
fn weigh(key: &str, entry: &Entry) -> u32 {
    let bytes = key.len() + entry.value.len() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

pub(crate) struct MemoryCache {
    entries: MokaCache<String, Entry>,
    /// The bound, in weighed bytes (`CACHE_MEMORY_BYTES`).
    max_bytes: u64,
}

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of keys and values (least
    /// recently used go first).
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            entries: MokaCache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, entry: &Entry| weigh(key, entry))
                .expire_after(PerEntryTtl)
                .build(),
            max_bytes,
        }
    }

    /// The live value of `key`, if any.
    pub(super) fn lookup(&self, key: &str) -> Option<Bytes> {
        self.entries.get(key).map(|e| e.value)
    }

    /// Stores `value`, replacing what the key held.
    pub(super) fn insert(&self, key: &str, value: Bytes, ttl: Duration) {
        self.entries.insert(key.to_owned(), Entry { value, ttl });
    }

    pub(super) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    /// Drops every entry present now (later inserts are kept).
    pub(super) fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// (weighed bytes held, entries held, the bound), after moka has applied
    /// its pending evictions: what `/metrics` reports.
    pub(super) fn usage(&self) -> (u64, u64, u64) {
        self.entries.run_pending_tasks();
        (
            self.entries.weighted_size(),
            self.entries.entry_count(),
            self.max_bytes,
        )
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        Ok(self.lookup(key))
    }

    async fn fill(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        self.entries
            .entry_by_ref(key)
            .or_insert_with(|| Entry { value, ttl });
        Ok(())
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        self.insert(key, value, ttl);
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fill_keeps_an_existing_value_and_put_replaces_it() {
        let cache = MemoryCache::new(1 << 20);
        let ttl = Duration::from_secs(60);
        cache
            .fill("k", Bytes::from_static(b"old"), ttl)
            .await
            .unwrap();
        cache
            .fill("k", Bytes::from_static(b"other"), ttl)
            .await
            .unwrap();
        assert_eq!(cache.get("k").await.unwrap().unwrap(), "old");
        cache
            .put("k", Bytes::from_static(b"new"), ttl)
            .await
            .unwrap();
        assert_eq!(cache.get("k").await.unwrap().unwrap(), "new");
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let cache = MemoryCache::new(1 << 20);
        cache
            .put("short", Bytes::from_static(b"x"), Duration::from_millis(20))
            .await
            .unwrap();
        cache
            .put("long", Bytes::from_static(b"y"), Duration::from_secs(60))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(cache.get("short").await.unwrap().is_none());
        assert!(cache.get("long").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bytes() {
        let max = 1 << 20;
        let cache = MemoryCache::new(max);
        let body = Bytes::from(vec![b'x'; 64 * 1024]);
        for i in 0..100 {
            cache
                .put(&format!("event:{i}"), body.clone(), Duration::from_secs(60))
                .await
                .unwrap();
        }
        cache.entries.run_pending_tasks();
        assert!(
            cache.entries.weighted_size() <= max,
            "{} bytes held, bound {max}",
            cache.entries.weighted_size()
        );
        let held = cache.entries.entry_count();
        assert!((1..16).contains(&held), "{held} bodies of 64 KiB in 1 MiB");
    }
}
