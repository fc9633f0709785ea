//! What a connection of the listener is doing, and so how long it may stay
//! open: the clock behind `HTTP_HEADER_READ_TIMEOUT`, `HTTP_IDLE_TIMEOUT`
//! and `HTTP_WRITE_TIMEOUT` (see [`super::server`]). A connection's reads
//! ([`Watched`]), its requests ([`InProgress`]), their bodies
//! ([`ReceivedBody`]) and their responses ([`TrackedBody`]) move its
//! [`Phase`]; the task serving it reads the deadline. [`OpenConnections`]
//! keeps every open connection's [`Activity`], for the listener to find the
//! one to close at the connection cap.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::unsent::Reserved;

/// The limits on a connection that waits for a request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
    /// From a response's head handed to the connection to the end of its
    /// body taken by the client.
    pub(super) write: Duration,
}

impl Timeouts {
    fn shortest(self) -> Duration {
        self.header_read.min(self.idle).min(self.write)
    }
}

/// What a connection is doing, which decides how long it may stay open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for a request's head, or the rest of it, since `since`.
    Head { since: Instant },
    /// Waiting for the next request, not a byte of it yet, since `since`.
    Idle { since: Instant },
    /// Serving requests: from the call of the application to the end of
    /// the response's body (the next head may arrive while one is written).
    /// `receiving`: request bodies not yet received in full.
    Busy { requests: usize, receiving: usize },
}

/// A connection's [`Phase`], updated by its reads ([`Watched`]) and its
/// requests ([`InProgress`]), read by the timer of the task that serves it.
#[derive(Debug)]
pub(super) struct Activity {
    phase: Mutex<Phase>,
    writing: Mutex<Writing>,
}

/// The responses of a connection on their way to the client.
#[derive(Debug, Default)]
struct Writing {
    /// Response bodies handed to the connection and not all taken by it.
    responses: usize,
    /// Since when a response has not been written out to the socket.
    unsent: Option<Instant>,
    /// The room those responses hold in the write buffer, freed when
    /// they are written out (or the connection closes).
    reserved: Vec<Reserved>,
}

impl Activity {
    pub(super) fn new(accepted: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::Head { since: accepted }),
            writing: Mutex::default(),
        }
    }

    pub(super) fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: an idle connection starts sending a request.
    pub(super) fn received(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
        }
    }

    pub(super) fn begin_request(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy {
                requests,
                receiving,
            } => Phase::Busy {
                requests: requests + 1,
                receiving,
            },
            Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy {
                requests: 1,
                receiving: 0,
            },
        };
    }

    pub(super) fn end_request(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy {
                requests,
                receiving,
            } if requests > 1 => Phase::Busy {
                requests: requests - 1,
                receiving,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
    }

    /// A request's body starts (`true`) or stops (`false`) being received.
    fn receiving(&self, starts: bool) {
        if let Phase::Busy { receiving, .. } = &mut *self.phase() {
            *receiving = if starts {
                *receiving + 1
            } else {
                receiving.saturating_sub(1)
            };
        }
    }

    /// A response is handed to the connection to be written.
    fn sending(&self, reserved: Option<Reserved>) {
        let mut writing = self.writing();
        writing.responses += 1;
        writing.unsent.get_or_insert_with(Instant::now);
        writing.reserved.extend(reserved);
    }

    /// A response's body is all handed to the connection (not yet all
    /// written: it may wait in the connection's buffer).
    fn sent(&self) {
        let mut writing = self.writing();
        writing.responses = writing.responses.saturating_sub(1);
    }

    /// The connection's buffer is written out to the socket.
    fn flushed(&self) {
        let mut writing = self.writing();
        if writing.responses == 0 {
            writing.unsent = None;
            writing.reserved.clear();
        }
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, Writing> {
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a response is not written out yet.
    pub(super) fn is_writing(&self) -> bool {
        self.writing().unsent.is_some()
    }

    /// When the connection is to be closed, unless it changes phase: the
    /// phase's deadline (none while a request is handled: a response takes
    /// what it takes to be made), or the write deadline of a response not
    /// written out yet, whichever is sooner.
    pub(super) fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        let phase = match *self.phase() {
            Phase::Head { since } => Some(since + timeouts.header_read),
            Phase::Idle { since } => Some(since + timeouts.idle),
            Phase::Busy { .. } => None,
        };
        let write = self.writing().unsent.map(|since| since + timeouts.write);
        match (phase, write) {
            (Some(phase), Some(write)) => Some(phase.min(write)),
            (phase, write) => phase.or(write),
        }
    }

    pub(super) fn is_expired(&self, timeouts: Timeouts, now: Instant) -> bool {
        self.deadline(timeouts)
            .is_some_and(|deadline| deadline <= now)
    }

    /// When the serving task looks at the deadline next, asked at `now`:
    /// the deadline, or `now` plus the shortest timeout if that is sooner
    /// (or no deadline runs). Phases change without waking the task, so
    /// the check must never come later than a deadline a change could set:
    /// any phase entered after `now` has its deadline at least the shortest
    /// timeout after `now`, and the current one is the deadline itself.
    /// A connection is therefore closed at its deadline, and a busy one is
    /// looked at once per shortest timeout.
    pub(super) fn next_check(&self, timeouts: Timeouts, now: Instant) -> Instant {
        let horizon = now + timeouts.shortest();
        self.deadline(timeouts)
            .map_or(horizon, |deadline| deadline.min(horizon))
    }

    /// Since when the connection has been waiting for a request with
    /// nothing to write; `None` while it serves or writes one.
    pub(super) fn waiting_since(&self) -> Option<Instant> {
        if self.is_writing() {
            return None;
        }
        match *self.phase() {
            Phase::Head { since } | Phase::Idle { since } => Some(since),
            Phase::Busy { .. } => None,
        }
    }

    /// Whether a request's body is still coming in.
    pub(super) fn is_receiving(&self) -> bool {
        matches!(*self.phase(), Phase::Busy { receiving, .. } if receiving > 0)
    }
}

/// An open connection: what it is doing, and how to ask it to make room.
type Open = (Arc<Activity>, Arc<Notify>);

/// The open connections, for the accept loop to find the one that has
/// waited longest for a request when the cap is reached.
#[derive(Default)]
pub(super) struct OpenConnections {
    connections: Mutex<HashMap<u64, Open>>,
    next_id: AtomicU64,
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the connection that has waited longest for a request to close
    /// (if any is waiting: one serving a request is left alone).
    pub(super) fn evict_longest(&self) {
        let connections = self.lock();
        let longest = connections
            .values()
            .filter_map(|(activity, evict)| Some((activity.waiting_since()?, evict)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, evict)) = longest {
            evict.notify_one();
        }
    }
}

/// A connection's place under the cap, and in [`OpenConnections`], until
/// dropped.
pub(super) struct Place {
    pub(super) activity: Arc<Activity>,
    pub(super) evict: Arc<Notify>,
    open: Arc<OpenConnections>,
    id: u64,
    _slot: OwnedSemaphorePermit,
}

impl Place {
    pub(super) fn register(open: &Arc<OpenConnections>, slot: OwnedSemaphorePermit) -> Self {
        let activity = Arc::new(Activity::new(Instant::now()));
        let evict = Arc::new(Notify::new());
        let id = open.next_id.fetch_add(1, Ordering::Relaxed);
        open.lock()
            .insert(id, (Arc::clone(&activity), evict.clone()));
        Self {
            activity,
            evict,
            open: Arc::clone(open),
            id,
            _slot: slot,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

/// A request from the call of the application until its response's body
/// is dropped (sent, or abandoned with the connection).
pub(super) struct InProgress(Arc<Activity>);

impl InProgress {
    pub(super) fn begin(activity: Arc<Activity>) -> Self {
        activity.begin_request();
        Self(activity)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that keeps its request [`InProgress`] until hyper has
/// taken it, and puts it under the write deadline from when it is made
/// until it is written out.
pub(super) struct TrackedBody {
    body: Body,
    in_progress: InProgress,
}

impl TrackedBody {
    /// `reserved`: the response's room in the write buffer, if it holds
    /// some.
    pub(super) fn new(body: Body, in_progress: InProgress, reserved: Option<Reserved>) -> Self {
        in_progress.0.sending(reserved);
        Self { body, in_progress }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.in_progress.0.sent();
    }
}

/// A request's body, counted as being received until its end or until it
/// is dropped.
pub(super) struct ReceivedBody<B> {
    body: B,
    /// `Some` until the end.
    activity: Option<Arc<Activity>>,
}

impl<B: http_body::Body> ReceivedBody<B> {
    pub(super) fn new(body: B, activity: &Arc<Activity>) -> Self {
        let activity = (!body.is_end_stream()).then(|| {
            activity.receiving(true);
            Arc::clone(activity)
        });
        Self { body, activity }
    }
}

impl<B> ReceivedBody<B> {
    fn ended(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.receiving(false);
        }
    }
}

impl<B> Drop for ReceivedBody<B> {
    fn drop(&mut self) {
        self.ended();
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for ReceivedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(poll, Poll::Ready(None | Some(Err(_)))) || self.body.is_end_stream() {
            self.ended();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's stream, telling its [`Activity`] when bytes arrive.
pub(super) struct Watched<I> {
    pub(super) inner: I,
    pub(super) activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes once its buffer is written to the stream.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(poll, Poll::Ready(Ok(()))) {
            self.activity.flushed();
        }
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
