//! The in-process tier in front of Redis (real stack only).
//!
//! Reads look here first; a miss reads Redis, then the store, and the value
//! found is copied here for at most `CACHE_LOCAL_TTL`. Redis stays the
//! shared tier that every write updates; this tier is only ever a copy of
//! what was read, and writes never put values into it: they evict.
//!
//! Invariants (each keeps a stale value from being served for longer than
//! `CACHE_LOCAL_TTL`, and in the usual case for no longer than one pub/sub
//! delivery):
//! - An entry lives at most `CACHE_LOCAL_TTL` (the smaller of it and the
//!   kind's TTL). This alone bounds staleness, whatever is lost.
//! - A write on this replica evicts the key after Redis took the new value;
//!   a write on another replica evicts it when its invalidation arrives on
//!   the pub/sub channel (see `invalidation`).
//! - A read may copy a value here only if no eviction of its key (and no
//!   clearing of the tier) happened since before it started reading: it
//!   takes a [`Ticket`] first and [`LocalTier::fill`] checks it under the
//!   same lock that evictions take. So a read that fetched the old value
//!   just before a write can never bring it back after the write's
//!   eviction, on this replica or on another one.
//! - While the invalidation subscription is not confirmed (start-up, Redis
//!   unreachable, reconnecting), the tier is off: empty, bypassed, and no
//!   read started before it went off may fill it.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::memory::MemoryCache;

/// Locks evictions and fills take, by hash of the key: enough that writes
/// to different keys seldom share one, few enough to clear them all at
/// once.
const STRIPES: usize = 256;

/// Proof that no eviction of a key happened since the ticket was taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    /// The stripe's eviction count when the ticket was taken.
    generation: u64,
}

pub(crate) struct LocalTier {
    entries: Arc<MemoryCache>,
    /// Longest life of an entry: the staleness bound (`CACHE_LOCAL_TTL`).
    ttl: Duration,
    /// On only while the invalidation subscription is confirmed.
    enabled: AtomicBool,
    /// Evictions counted per stripe of keys; a fill whose ticket is behind
    /// its stripe's count is dropped.
    stripes: Box<[Mutex<u64>]>,
    hasher: RandomState,
    /// Reads answered from this tier (`cache_local_hits_total`).
    hits: AtomicU64,
    /// Invalidations received from the channel.
    invalidations: AtomicU64,
}

impl LocalTier {
    /// An empty tier, off until [`LocalTier::enable`].
    pub(crate) fn new(entries: Arc<MemoryCache>, ttl: Duration) -> Self {
        Self {
            entries,
            ttl,
            enabled: AtomicBool::new(false),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: RandomState::new(),
            hits: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    fn lock(&self, stripe: usize) -> MutexGuard<'_, u64> {
        self.stripes[stripe]
            .lock()
            .expect("BUG: local cache stripe poisoned")
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The value of `key`, if this tier is on and holds it.
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        if !self.is_enabled() {
            return None;
        }
        let value = self.entries.lookup(key)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(value)
    }

    /// Taken before reading `key` from Redis or the store; `None` while the
    /// tier is off (the read will not fill it).
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        if !self.is_enabled() {
            return None;
        }
        let stripe = self.stripe(key);
        let generation = *self.lock(stripe);
        Some(Ticket { stripe, generation })
    }

    /// Copies a value read since `ticket` was taken, unless the key was
    /// evicted (or the tier cleared or turned off) in between. Lives the
    /// smaller of `ttl` and this tier's TTL.
    pub(crate) fn fill(&self, key: &str, value: Bytes, ttl: Duration, ticket: Ticket) {
        let generation = self.lock(ticket.stripe);
        if *generation == ticket.generation && self.is_enabled() {
            self.entries.insert(key, value, ttl.min(self.ttl));
        }
    }

    /// Drops `key`, and any value of it being read now.
    pub(crate) fn evict(&self, key: &str) {
        let mut generation = self.lock(self.stripe(key));
        *generation += 1;
        self.entries.remove(key);
    }

    /// [`LocalTier::evict`] for a key named by another replica.
    pub(crate) fn evict_invalidated(&self, key: &str) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.evict(key);
    }

    /// Drops every entry, and every value being read now.
    pub(crate) fn clear(&self) {
        for stripe in 0..STRIPES {
            *self.lock(stripe) += 1;
        }
        // After every stripe moved: a fill that got in before its stripe
        // moved is cleared here, any later one fails its ticket.
        self.entries.clear();
    }

    /// Turns the tier on, empty: the subscription is confirmed, so every
    /// later write anywhere will reach it.
    pub(crate) fn enable(&self) {
        self.clear();
        self.enabled.store(true, Ordering::Release);
    }

    /// Turns the tier off and empties it: invalidations may be missed.
    pub(crate) fn disable(&self) {
        self.enabled.store(false, Ordering::Release);
        self.clear();
    }

    /// (reads answered here, invalidations received), for `/metrics`.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.invalidations.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn tier() -> LocalTier {
        let tier = LocalTier::new(Arc::new(MemoryCache::new(1 << 20)), TTL);
        tier.enable();
        tier
    }

    #[test]
    fn a_read_fills_the_tier_and_is_answered_from_it() {
        let tier = tier();
        let ticket = tier.ticket("k").unwrap();
        tier.fill("k", Bytes::from_static(b"v"), TTL, ticket);
        assert_eq!(tier.get("k").unwrap(), "v");
        assert_eq!(tier.counts().0, 1);
    }

    #[test]
    fn a_read_that_raced_an_eviction_does_not_fill() {
        let tier = tier();
        let ticket = tier.ticket("k").unwrap();
        // The write lands (here or on another replica) while the read holds
        // the old value.
        tier.evict_invalidated("k");
        tier.fill("k", Bytes::from_static(b"old"), TTL, ticket);
        assert!(tier.get("k").is_none());
        // A read that starts after the eviction fills as usual.
        let ticket = tier.ticket("k").unwrap();
        tier.fill("k", Bytes::from_static(b"new"), TTL, ticket);
        assert_eq!(tier.get("k").unwrap(), "new");
    }

    #[test]
    fn an_eviction_after_a_fill_drops_the_value() {
        let tier = tier();
        let ticket = tier.ticket("k").unwrap();
        tier.fill("k", Bytes::from_static(b"old"), TTL, ticket);
        tier.evict("k");
        assert!(tier.get("k").is_none());
    }

    #[test]
    fn while_off_the_tier_is_empty_bypassed_and_not_filled() {
        let tier = tier();
        let before = tier.ticket("a").unwrap();
        tier.fill(
            "b",
            Bytes::from_static(b"b"),
            TTL,
            tier.ticket("b").unwrap(),
        );
        tier.disable();
        assert!(tier.ticket("a").is_none(), "reads do not fill while off");
        tier.fill("a", Bytes::from_static(b"a"), TTL, before);
        assert!(tier.get("b").is_none(), "cleared when turned off");
        tier.enable();
        assert!(tier.get("a").is_none(), "a read from before the outage");
        assert!(tier.get("b").is_none());
        tier.fill("a", Bytes::from_static(b"late"), TTL, before);
        assert!(
            tier.get("a").is_none(),
            "its ticket is from before the outage"
        );
    }

    #[test]
    fn entries_live_no_longer_than_the_tier_ttl() {
        let tier = LocalTier::new(
            Arc::new(MemoryCache::new(1 << 20)),
            Duration::from_millis(20),
        );
        tier.enable();
        tier.fill(
            "k",
            Bytes::from_static(b"v"),
            TTL,
            tier.ticket("k").unwrap(),
        );
        assert!(tier.get("k").is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(tier.get("k").is_none());
    }
}
