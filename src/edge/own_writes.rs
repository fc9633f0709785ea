//! Each caller reads its own writes, with a read replica
//! (see [`crate::store::replica`]).
//!
//! The layer remembers when each caller last wrote (a request that is not
//! GET or HEAD, once answered: its transaction has committed), and runs
//! each read inside [`replica::reading_after`] that time, so that the
//! store sends the caller's reads to the primary until the replica has
//! caught up past it. A caller is its verified credential, else its
//! address, as for idempotency keys. Only the last `DB_READ_MAX_LAG` of
//! writes matter (a replica further behind takes no reads), so that is how
//! long a caller is remembered; at most [`MAX_CALLERS`] are, the least
//! recent forgotten first.
//!
//! This holds on the instance that took the write. Behind a load balancer
//! without affinity, another instance's reads lag at most
//! `DB_READ_MAX_LAG` (and reads by id still find the row: the caches are
//! filled by the write, and a row the replica lacks is read from the
//! primary).

use std::time::{Duration, Instant};

use axum::http::Method;
use axum::response::Response;

use crate::store::replica;

/// Most callers remembered at once.
pub(crate) const MAX_CALLERS: u64 = 100_000;

pub(crate) struct OwnWrites {
    /// When each caller (as [`super::idempotency::caller_of`] names it) last wrote.
    wrote: moka::sync::Cache<String, Instant>,
}

impl OwnWrites {
    /// Remembers writes for `max_lag` (`DB_READ_MAX_LAG`).
    pub(crate) fn new(max_lag: Duration) -> Self {
        Self {
            wrote: moka::sync::Cache::builder()
                .max_capacity(MAX_CALLERS)
                .time_to_live(max_lag.max(replica::SAMPLE_EVERY * 2))
                .build(),
        }
    }

    /// Answers `caller`'s request with `answer`: a read after the
    /// caller's last write, a write remembered once answered.
    pub(crate) async fn around(
        &self,
        caller: String,
        method: &Method,
        answer: impl Future<Output = Response>,
    ) -> Response {
        if matches!(*method, Method::GET | Method::HEAD) {
            let wrote_at = self.wrote.get(&caller);
            return replica::reading_after(wrote_at, answer).await;
        }
        let response = answer.await;
        self.wrote.insert(caller, Instant::now());
        response
    }
}
