//! What `GET /metrics` shows of the in-process cache, sampled at scrape
//! time: its weighed bytes against `CACHE_MEMORY_BYTES`, and on the real
//! stack whether the tier in front of Redis is on, how many reads it
//! answered and how many invalidations it received.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::local::LocalTier;
use super::memory::MemoryCache;

pub(super) struct InProcessCacheCollector {
    pub memory: Arc<MemoryCache>,
    /// The tier in front of Redis whose store is `memory` (real stack).
    pub local: Option<Arc<LocalTier>>,
}

impl std::fmt::Debug for InProcessCacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCacheCollector")
            .finish_non_exhaustive()
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

impl Collector for InProcessCacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (bytes, entries, max_bytes) = self.memory.usage();
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "cache_memory_bytes",
            "Bytes held by the in-process cache: keys, values and bookkeeping",
            clamp(bytes),
        )?;
        gauge(
            &mut encoder,
            "cache_memory_max_bytes",
            "Bound of the in-process cache (CACHE_MEMORY_BYTES)",
            clamp(max_bytes),
        )?;
        gauge(
            &mut encoder,
            "cache_memory_entries",
            "Entries held by the in-process cache",
            clamp(entries),
        )?;
        let Some(local) = &self.local else {
            return Ok(());
        };
        let (hits, invalidations) = local.counts();
        gauge(
            &mut encoder,
            "cache_local_enabled",
            "1 while the in-process tier in front of Redis is on (invalidations subscribed)",
            i64::from(local.is_enabled()),
        )?;
        counter(
            &mut encoder,
            "cache_local_hits",
            "Reads answered by the in-process tier in front of Redis",
            hits,
        )?;
        counter(
            &mut encoder,
            "cache_invalidations_received",
            "Invalidations received from the channel (any replica's writes)",
            invalidations,
        )
    }
}
