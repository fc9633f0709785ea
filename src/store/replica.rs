//! Reads from a streaming replica (`DATABASE_READ_URL`, `DB_READ_HOST`),
//! without a client missing its own writes.
//!
//! Lists, activity and reads by id that miss the cache go to the replica
//! when it is fresh enough for the caller; everything else (writes, the
//! idempotency keys, credentials, the outbox) stays on the primary.
//!
//! **How fresh.** A task samples the primary's WAL position, then the
//! position the replica has replayed, every [`SAMPLE_EVERY`]. When the
//! replica has replayed as far as the primary was at a sample's start,
//! everything committed before that start is visible there: the sample's
//! start is the replica's *caught-up time*. The replica's lag is how long
//! ago that was (`db_replica_lag_seconds`).
//!
//! **Whose writes.** The edge names each caller (credential, or address)
//! and notes its writes in [`Writes`] once they are answered
//! ([`crate::edge::own_writes`]); it runs the caller's reads inside
//! [`reading_as`]. A read goes to the
//! replica only if the replica caught up after it, and only while the lag
//! is within `DB_READ_MAX_LAG`; otherwise it goes to the primary. So a
//! client reads its own writes at once, and everyone else reads at most
//! `DB_READ_MAX_LAG` behind. A row the replica does not have yet (a read
//! by id after another instance's write) is read again from the primary,
//! and so is any read the replica fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the replica's position is compared with the primary's: a
/// caller's reads go to the primary for about this long after its write.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(10);

tokio::task_local! {
    /// The caller of the request this task serves, and where its writes
    /// are remembered.
    static CALLER: (Arc<Writes>, u64);
}

/// When each caller (a key the edge makes of its credential or address)
/// last wrote, for `DB_READ_MAX_LAG`: older writes do not matter, a
/// replica further behind takes no reads. At most [`MAX_CALLERS`], the
/// least recent forgotten first.
pub(crate) struct Writes(moka::sync::Cache<u64, Instant>);

/// Most callers remembered at once.
pub(crate) const MAX_CALLERS: u64 = 100_000;

impl Writes {
    pub(crate) fn new(max_lag: Duration) -> Arc<Self> {
        Arc::new(Self(
            moka::sync::Cache::builder()
                .max_capacity(MAX_CALLERS)
                .time_to_live(max_lag.max(SAMPLE_EVERY * 2))
                .build(),
        ))
    }

    /// `caller`'s write has just committed.
    pub(crate) fn wrote(&self, caller: u64) {
        self.0.insert(caller, Instant::now());
    }
}

/// Runs `read` for `caller`, whose writes `writes` remembers. Nothing is
/// looked up unless the read reaches the store and a replica.
pub(crate) async fn reading_as<F: Future>(writes: Arc<Writes>, caller: u64, read: F) -> F::Output {
    CALLER.scope((writes, caller), read).await
}

/// When the caller of the request this task serves last wrote, if it did.
fn caller_wrote_at() -> Option<Instant> {
    CALLER
        .try_with(|(writes, caller)| writes.0.get(caller))
        .ok()
        .flatten()
}

/// How fresh the replica is, as the sampler last saw it.
pub(crate) struct Freshness {
    /// Where [`Freshness::caught_up`] counts from.
    origin: Instant,
    /// Nanoseconds after `origin` of the latest caught-up time, plus one
    /// (0: never caught up yet).
    caught_up: AtomicU64,
    max_lag: Duration,
}

impl Freshness {
    pub(crate) fn new(max_lag: Duration) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            caught_up: AtomicU64::new(0),
            max_lag,
        })
    }

    /// The replica had replayed everything committed before `at`.
    pub(crate) fn caught_up_at(&self, at: Instant) {
        let nanos = u64::try_from(at.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX - 1)
            + 1;
        self.caught_up.fetch_max(nanos, Ordering::Relaxed);
    }

    fn caught_up(&self) -> Option<Instant> {
        match self.caught_up.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.origin + Duration::from_nanos(nanos - 1)),
        }
    }

    /// How far behind the replica is (`None`: it has not been seen caught
    /// up yet).
    pub(crate) fn lag(&self) -> Option<Duration> {
        self.caught_up().map(|at| at.elapsed())
    }

    /// Whether the current caller's read may go to the replica.
    pub(crate) fn serves_caller(&self) -> bool {
        self.serves(caller_wrote_at, Instant::now())
    }

    /// `wrote_at` is asked last: a replica too far behind needs no look-up.
    fn serves(&self, wrote_at: impl FnOnce() -> Option<Instant>, now: Instant) -> bool {
        let Some(caught_up) = self.caught_up() else {
            return false;
        };
        now.saturating_duration_since(caught_up) <= self.max_lag
            && wrote_at().is_none_or(|wrote| wrote < caught_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_serves_callers_whose_writes_it_has_within_the_lag() {
        let freshness = Freshness::new(Duration::from_secs(1));
        let start = Instant::now();
        assert!(!freshness.serves(|| None, start), "never seen caught up");
        freshness.caught_up_at(start);
        assert!(freshness.serves(|| None, start));
        let wrote = start + Duration::from_millis(5);
        assert!(
            !freshness.serves(|| Some(wrote), wrote),
            "its write is newer"
        );
        assert!(freshness.serves(|| Some(start - Duration::from_millis(1)), wrote));
        freshness.caught_up_at(wrote + Duration::from_millis(1));
        assert!(freshness.serves(|| Some(wrote), wrote + Duration::from_millis(2)));
        freshness.caught_up_at(start);
        assert!(
            freshness.serves(|| Some(wrote), wrote + Duration::from_millis(2)),
            "an older sample does not move it back"
        );
        assert!(
            !freshness.serves(|| None, wrote + Duration::from_millis(1002)),
            "past the lag allowed"
        );
    }

    #[tokio::test]
    async fn the_callers_write_follows_its_reads() {
        let freshness = Freshness::new(Duration::from_secs(60));
        freshness.caught_up_at(Instant::now());
        assert!(freshness.serves_caller());
        let writes = Writes::new(Duration::from_secs(60));
        writes.wrote(1);
        let serves = |caller| {
            reading_as(Arc::clone(&writes), caller, async {
                freshness.serves_caller()
            })
        };
        assert!(!serves(1).await, "the caller who wrote");
        assert!(serves(2).await, "another caller");
        freshness.caught_up_at(Instant::now());
        assert!(serves(1).await, "once the replica caught up");
    }
}
