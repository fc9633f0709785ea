//! In-process cache (moka): the embedded default, bounded by entry count,
//! with a TTL per entry.

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

pub struct MemoryCache {
    entries: MokaCache<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most `capacity` entries (least recently used go
    /// first).
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: MokaCache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        Ok(self.entries.get(key).map(|e| e.value))
    }

    async fn fill(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        self.entries
            .entry_by_ref(key)
            .or_insert_with(|| Entry { value, ttl });
        Ok(())
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        self.entries.insert(key.to_owned(), Entry { value, ttl });
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
        let cache = MemoryCache::new(100);
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
        let cache = MemoryCache::new(100);
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
}
