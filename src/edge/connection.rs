//! What a connection of the listener is doing, and so how long it may stay
//! open: the clock behind `HTTP_HEADER_READ_TIMEOUT` and
//! `HTTP_IDLE_TIMEOUT` (see [`super::server`]). A connection's reads
//! ([`Watched`]) and its requests ([`InProgress`], [`TrackedBody`]) move
//! its [`Phase`]; the task serving it reads the deadline.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The limits on a connection that waits for a request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
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
    Busy { requests: usize },
}

/// A connection's [`Phase`], updated by its reads ([`Watched`]) and its
/// requests ([`InProgress`]), read by the timer of the task that serves it.
#[derive(Debug)]
pub(super) struct Activity {
    phase: Mutex<Phase>,
}

impl Activity {
    pub(super) fn new(accepted: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::Head { since: accepted }),
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
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy { requests: 1 },
        };
    }

    pub(super) fn end_request(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
    }

    /// When the connection is to be closed, unless it changes phase; `None`
    /// while it serves a request.
    pub(super) fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        match *self.phase() {
            Phase::Head { since } => Some(since + timeouts.header_read),
            Phase::Idle { since } => Some(since + timeouts.idle),
            Phase::Busy { .. } => None,
        }
    }

    pub(super) fn is_expired(&self, timeouts: Timeouts, now: Instant) -> bool {
        self.deadline(timeouts)
            .is_some_and(|deadline| deadline <= now)
    }

    /// When the serving task looks at the deadline next, asked at `now`:
    /// the deadline, or `now` plus the shorter timeout if that is sooner
    /// (or no deadline runs). Phases change without waking the task, so
    /// the check must never come later than a deadline a change could set:
    /// any phase entered after `now` has its deadline at least the shorter
    /// timeout after `now`, and the current one is the deadline itself.
    /// A connection is therefore closed at its deadline, and a busy one is
    /// looked at once per shorter timeout.
    pub(super) fn next_check(&self, timeouts: Timeouts, now: Instant) -> Instant {
        let horizon = now + timeouts.header_read.min(timeouts.idle);
        self.deadline(timeouts)
            .map_or(horizon, |deadline| deadline.min(horizon))
    }

    /// Whether no request is in progress (the connection is idle, or still
    /// sending a head).
    pub(super) fn is_waiting(&self) -> bool {
        !matches!(*self.phase(), Phase::Busy { .. })
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
/// sent it.
pub(super) struct TrackedBody {
    pub(super) body: Body,
    pub(super) _in_progress: InProgress,
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
