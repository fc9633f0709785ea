//! Each caller reads its own writes, with a read replica
//! (see [`crate::store::replica`]).
//!
//! The layer names each caller (its verified credential, else its
//! address, as for idempotency keys) by a hash, notes when its writes (a
//! request of an unsafe method: POST, PUT, DELETE…) are answered, and runs
//! its reads inside [`replica::reading_as`], so that the store sends a
//! read to the primary until the replica has caught up past the caller's
//! last write.
//!
//! This holds on the instance that took the write. Behind a load balancer
//! without affinity, another instance's reads lag at most
//! `DB_READ_MAX_LAG` (and reads by id still find the row: the caches are
//! filled by the write, and a row the replica lacks is read from the
//! primary).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

use super::idempotency::Caller;
use crate::store::replica::{self, Writes};

pub(crate) struct OwnWrites {
    writes: Arc<Writes>,
    /// Keyed at random: nobody can choose a name that another caller's
    /// hash shares.
    names: std::hash::RandomState,
}

impl OwnWrites {
    /// Remembers writes for `max_lag` (`DB_READ_MAX_LAG`).
    pub(crate) fn new(max_lag: Duration) -> Self {
        Self {
            writes: Writes::new(max_lag),
            names: std::hash::RandomState::new(),
        }
    }

    /// The name of `req`'s caller.
    pub(crate) fn caller(&self, guards: &super::Guards, req: &Request) -> u64 {
        self.names.hash_one(Caller::of(guards, req))
    }

    /// Answers `caller`'s request with `answer`: a read as the caller, a
    /// write noted once answered.
    pub(crate) async fn around(
        &self,
        caller: u64,
        method: &Method,
        answer: impl Future<Output = Response>,
    ) -> Response {
        if method.is_safe() {
            return replica::reading_as(Arc::clone(&self.writes), caller, answer).await;
        }
        let response = answer.await;
        self.writes.wrote(caller);
        response
    }
}
