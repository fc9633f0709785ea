//! Profiles on demand (`PROFILING=true`, admin scope, with an `AUTH_MODE`):
//! `GET /debug/pprof/profile?seconds=N` samples the process's CPU for N
//! seconds (1 to 60, default 10) at 99 Hz and answers pprof's protobuf
//! (`go tool pprof -top profile.pb`); `GET /debug/allocator` answers
//! jemalloc's statistics. One CPU profile at a time: another request
//! meanwhile gets 409. The Go service exposes `/debug/pprof` to anybody;
//! here it is off by default and for admins only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pprof::protos::Message;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::extract::ApiQuery;
use crate::domain::ValidationError;

/// Samples per second: not a multiple of common timer rates, so that
/// periodic work is not sampled in lockstep.
const FREQUENCY: i32 = 99;
const MAX_SECONDS: u64 = 60;

/// Set while a CPU profile runs.
static PROFILING: AtomicBool = AtomicBool::new(false);

#[derive(Deserialize)]
pub(super) struct ProfileQuery {
    seconds: Option<String>,
}

pub(super) async fn cpu_profile(
    ApiQuery(query): ApiQuery<ProfileQuery>,
) -> Result<Response, ApiError> {
    let seconds = match query.seconds.as_deref() {
        None => 10,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=MAX_SECONDS).contains(s))
            .ok_or_else(|| {
                ApiError::InvalidQuery(ValidationError::new(
                    "seconds",
                    format!("must be a whole number from 1 to {MAX_SECONDS}"),
                ))
            })?,
    };
    if PROFILING.swap(true, Ordering::AcqRel) {
        return Ok((
            StatusCode::CONFLICT,
            "a CPU profile is being taken; retry when it is done\n",
        )
            .into_response());
    }
    // Ends the profile's turn however this request ends (a client that
    // hangs up drops it midway).
    struct Turn;
    impl Drop for Turn {
        fn drop(&mut self) {
            PROFILING.store(false, Ordering::Release);
        }
    }
    let _turn = Turn;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| {
            ApiError::Internal(anyhow::Error::new(e).context("failed to start profiling"))
        })?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let encoded = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        let profile = guard.report().build()?.pprof()?;
        let mut bytes = Vec::new();
        profile.encode(&mut bytes)?;
        Ok(bytes)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| ApiError::Internal(e.context("failed to build the profile")))?;
    tracing::info!(seconds, bytes = encoded.len(), "CPU profile taken");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"profile.pb\"",
            ),
        ],
        encoded,
    )
        .into_response())
}

/// jemalloc's figures, in bytes (see its `stats.*` documentation).
#[derive(Serialize)]
struct Allocator {
    /// Bytes the application has allocated and not freed.
    allocated: usize,
    /// Bytes in pages the allocator has handed out (≥ allocated).
    active: usize,
    /// Bytes of the allocator's own data structures.
    metadata: usize,
    /// Bytes of physically resident pages the allocator maps.
    resident: usize,
    /// Bytes mapped by the allocator.
    mapped: usize,
    /// Bytes kept mapped to be reused, not returned to the system.
    retained: usize,
}

pub(super) async fn allocator() -> Result<Response, ApiError> {
    use tikv_jemalloc_ctl::{epoch, stats};
    let read = || -> Result<Allocator, tikv_jemalloc_ctl::Error> {
        // The statistics are a snapshot, taken when the epoch advances.
        epoch::advance()?;
        Ok(Allocator {
            allocated: stats::allocated::read()?,
            active: stats::active::read()?,
            metadata: stats::metadata::read()?,
            resident: stats::resident::read()?,
            mapped: stats::mapped::read()?,
            retained: stats::retained::read()?,
        })
    };
    let figures =
        read().map_err(|e| ApiError::Internal(anyhow::anyhow!("jemalloc statistics: {e}")))?;
    Ok(Json(figures).into_response())
}
