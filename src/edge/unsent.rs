//! A bound on the memory of responses on their way to slow clients: the
//! bytes of responses made and not yet written out to their sockets, over
//! all connections, are at most `HTTP_WRITE_BUFFER_LIMIT`. A response that
//! would pass it waits for room, holding its admission slot (so that few
//! more are made meanwhile), up to `ADMISSION_QUEUE_TIMEOUT`, then is
//! dropped and answered 503 `overloaded`. Its room is freed once the
//! connection has written it out, or closed (`HTTP_WRITE_TIMEOUT` closes a
//! client that does not read): see `connection::Activity`.
//!
//! A response larger than the whole limit takes all of it, alone.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::error::ApiError;

/// Responses smaller than this are not counted: a socket's own buffer
/// takes them whole.
const COUNTED_FROM: u64 = 64 * 1024;

/// The room left for responses on their way out.
pub(crate) struct WriteBuffer {
    room: Arc<Semaphore>,
    limit: u32,
    wait: Duration,
}

/// A response's room, freed when the last clone is dropped (by the
/// connection, once the response is written out).
#[derive(Debug, Clone)]
pub(super) struct Reserved {
    _room: Arc<OwnedSemaphorePermit>,
}

impl WriteBuffer {
    /// `limit`: bytes (at most 4 GiB); `wait`: the longest a response
    /// waits for room.
    pub(crate) fn new(limit: usize, wait: Duration) -> Self {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        Self {
            room: Arc::new(Semaphore::new(limit as usize)),
            limit,
            wait,
        }
    }

    /// Room for a response of `size` bytes; `None` if none came in time.
    async fn reserve(&self, size: u64) -> Option<Reserved> {
        let bytes = u32::try_from(size).unwrap_or(u32::MAX).min(self.limit);
        let acquire = Arc::clone(&self.room).acquire_many_owned(bytes);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Some(Reserved {
                _room: Arc::new(permit),
            }),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Bytes free now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.room.available_permits()
    }
}

/// The response with its room reserved, or a 503 in its place.
pub(super) async fn reserve_room(buffer: &WriteBuffer, mut response: Response) -> Response {
    let size = response
        .body()
        .size_hint()
        .exact()
        .unwrap_or_else(|| response.body().size_hint().lower());
    if size < COUNTED_FROM {
        return response;
    }
    match buffer.reserve(size).await {
        Some(reserved) => {
            response.extensions_mut().insert(reserved);
            response
        }
        None => {
            tracing::debug!(
                bytes = size,
                "no room for a response among those on their way out"
            );
            ApiError::Overloaded.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn room_is_held_until_dropped_and_a_response_larger_than_all_takes_all() {
        let buffer = WriteBuffer::new(1000, Duration::from_secs(1));
        let first = buffer.reserve(600).await.expect("room");
        assert_eq!(buffer.free(), 400);
        assert!(
            buffer.reserve(600).await.is_none(),
            "no room within the wait"
        );
        drop(first);
        let huge = buffer.reserve(5000).await.expect("all of it, alone");
        assert_eq!(buffer.free(), 0);
        let clone = huge.clone();
        drop(huge);
        assert_eq!(buffer.free(), 0, "held while a clone lives");
        drop(clone);
        assert_eq!(buffer.free(), 1000);
    }
}
