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
//!
//! A page too large to make whole is made as its client takes it
//! ([`Streamed`]): its rows hold room until they are serialized, and its
//! serialized chunks hold room until they leave for the socket, at most
//! [`STREAM_ALLOWANCE`] bytes of them at a time. A client that does not
//! read stops the page where its socket filled, not after all of it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as _, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

use crate::http::error::ApiError;

/// Responses smaller than this are not counted: a socket's own buffer
/// takes them whole.
const COUNTED_FROM: u64 = 64 * 1024;

/// The room left for responses on their way out (clones share it).
#[derive(Clone)]
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
        let Held(permit) = self.hold(size).await?;
        Some(Reserved {
            _room: Arc::new(permit),
        })
    }

    /// Room for `bytes` (all of it, if more), held until dropped or
    /// shrunk; `None` if none came in time (503).
    pub(crate) async fn hold(&self, bytes: u64) -> Option<Held> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX).min(self.limit);
        let acquire = Arc::clone(&self.room).acquire_many_owned(bytes);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Some(Held(permit)),
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

/// Room held in the write buffer: see [`WriteBuffer::hold`].
#[derive(Debug)]
pub(crate) struct Held(OwnedSemaphorePermit);

impl Held {
    /// Gives back all but `bytes` of the room (the rows turned out
    /// smaller than their bound).
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        self.give_back(self.0.num_permits().saturating_sub(bytes));
    }

    fn give_back(&mut self, bytes: usize) {
        drop(self.0.split(bytes.min(self.0.num_permits())));
    }
}

/// The serialized bytes a streamed page may have on their way out at a
/// time, beyond its rows (one chunk is at most this long).
pub(crate) const STREAM_ALLOWANCE: usize = 1024 * 1024;

/// One piece of a page made as its client takes it: `json`, made of rows
/// that held `rows` bytes, which it frees.
pub(crate) struct Chunk {
    pub(crate) json: Vec<u8>,
    pub(crate) rows: usize,
}

/// A response body made of `chunks` as the connection asks for them:
/// the rows' room shrinks as they are serialized, and a chunk waits
/// until those before it, but at most `STREAM_ALLOWANCE` bytes, are still
/// on their way to the socket. Each chunk gives its room back once the
/// connection has written it (hyper drops its bytes then).
pub(crate) struct Streamed<I> {
    chunks: I,
    /// Made, waiting for room.
    pending: Option<Vec<u8>>,
    rows: Held,
    /// The allowance's room in the write buffer, kept until the body and
    /// every chunk it made are dropped.
    allowance: Arc<Held>,
    /// The allowance itself, of this body only: a client that does not
    /// read holds up its own page, not the others'.
    unsent: PollSemaphore,
}

impl<I: Iterator<Item = Chunk>> Streamed<I> {
    /// `rows`: the room of the rows `chunks` are made of; `allowance`:
    /// [`STREAM_ALLOWANCE`] bytes of room (see [`WriteBuffer::hold`]).
    pub(crate) fn new(rows: Held, allowance: Held, chunks: I) -> Self {
        Self {
            chunks,
            pending: None,
            rows,
            allowance: Arc::new(allowance),
            unsent: PollSemaphore::new(Arc::new(Semaphore::new(STREAM_ALLOWANCE))),
        }
    }
}

/// A chunk's bytes and the room they hold until hyper drops them.
struct Sent {
    json: Vec<u8>,
    _unsent: OwnedSemaphorePermit,
    _allowance: Arc<Held>,
}

impl AsRef<[u8]> for Sent {
    fn as_ref(&self) -> &[u8] {
        &self.json
    }
}

impl<I: Iterator<Item = Chunk> + Unpin> http_body::Body for Streamed<I> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let json = match this.pending.take() {
            Some(json) => json,
            None => match this.chunks.next() {
                Some(chunk) => {
                    this.rows.give_back(chunk.rows);
                    chunk.json
                }
                None => return Poll::Ready(None),
            },
        };
        let bytes = u32::try_from(json.len().clamp(1, STREAM_ALLOWANCE)).unwrap_or(u32::MAX);
        match this.unsent.poll_acquire_many(cx, bytes) {
            Poll::Ready(Some(permit)) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(Sent {
                    json,
                    _unsent: permit,
                    _allowance: Arc::clone(&this.allowance),
                })))))
            }
            // The semaphore is this body's and never closed.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                this.pending = Some(json);
                Poll::Pending
            }
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

    /// Polls `body` once, as a connection would.
    fn next_frame<B: http_body::Body + Unpin>(body: &mut B) -> Poll<Option<B::Data>> {
        let waker = std::task::Waker::noop();
        Pin::new(body)
            .poll_frame(&mut Context::from_waker(waker))
            .map(|frame| {
                frame.map(|frame| {
                    frame
                        .ok()
                        .and_then(|frame| frame.into_data().ok())
                        .expect("a data frame")
                })
            })
    }

    #[tokio::test]
    async fn a_stream_waits_while_its_allowance_is_unsent_and_frees_rows_as_it_goes() {
        const A: usize = STREAM_ALLOWANCE;
        let buffer = WriteBuffer::new(4 * A, Duration::from_secs(1));
        let rows = buffer.hold(A as u64).await.expect("room");
        let allowance = buffer.hold(A as u64).await.expect("room");
        // Four chunks of half the allowance, each made of a quarter of it
        // in rows.
        let chunks = (0..4u8).map(|i| Chunk {
            json: vec![i; A / 2],
            rows: A / 4,
        });
        let mut body = Streamed::new(rows, allowance, chunks);
        assert_eq!(buffer.free(), 2 * A);

        let Poll::Ready(Some(first)) = next_frame(&mut body) else {
            panic!("the first chunk")
        };
        let Poll::Ready(Some(second)) = next_frame(&mut body) else {
            panic!("the second chunk")
        };
        assert_eq!((first[0], second[0]), (0, 1));
        assert_eq!(buffer.free(), 2 * A + A / 2, "two chunks' rows freed");
        assert!(
            next_frame(&mut body).is_pending(),
            "the allowance is on its way out"
        );
        drop(first);
        let Poll::Ready(Some(third)) = next_frame(&mut body) else {
            panic!("the third chunk, once the first is written")
        };
        assert_eq!(third[0], 2);
        drop((second, third));
        let Poll::Ready(Some(fourth)) = next_frame(&mut body) else {
            panic!("the fourth chunk")
        };
        assert!(matches!(next_frame(&mut body), Poll::Ready(None)));
        assert_eq!(buffer.free(), 3 * A, "all rows freed, the allowance held");
        drop(body);
        assert_eq!(buffer.free(), 3 * A, "held while its last chunk is unsent");
        drop(fourth);
        assert_eq!(buffer.free(), 4 * A);
    }
}
