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

pub mod memory;
mod read_through;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use read_through::{CacheKind, ReadThrough};

#[async_trait]
pub trait Cache: Send + Sync + 'static {
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
