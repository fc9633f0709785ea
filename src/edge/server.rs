//! The HTTP listener: accepts connections and serves the application on
//! each one, HTTP/1.1 with keep-alive, in plain text or over TLS.
//!
//! A slow or idle client must not keep what others need:
//! - A request's head must arrive within `HTTP_HEADER_READ_TIMEOUT`,
//!   counted from the accept (TLS handshake included) or, on a keep-alive
//!   connection, from the first byte of the next request. Between requests a
//!   connection may wait `HTTP_IDLE_TIMEOUT`. Past either, it is closed.
//!   hyper's own `header_read_timeout` starts its clock whenever it waits for
//!   a head, idle time included, so it cannot keep the two apart: the clock
//!   is kept here instead ([`Activity`]), from the bytes a connection reads
//!   and the requests it serves.
//! - At most `HTTP_MAX_CONNECTIONS` connections are open at once. At the cap
//!   the connection that has waited longest for a request (a slow head, or
//!   an idle keep-alive) is closed to make room for the next one, so that a
//!   crowd of slow clients cannot keep a health probe out; when every
//!   connection is serving a request, the new one waits for a slot, and the
//!   ones after it in the kernel's listen backlog, rather than being closed
//!   at once. The process never runs out of file descriptors, which would
//!   fail its accepts and its own pools alike.
//! - A response must be taken by its client within `HTTP_WRITE_TIMEOUT`,
//!   from the handler's answer to the end of its body; a client that does
//!   not read is closed then, and the response's memory freed. (A request's
//!   body has `HTTP_BODY_READ_TIMEOUT`, answered 408: see `edge::body`.)
//! - On shutdown the listener closes, connections waiting for a request
//!   (idle, or still sending a head or a body) are closed at once, those
//!   whose response is being written get [`SHUTDOWN_WRITE_GRACE`] more at
//!   most, and those with a request being handled finish it, then close.
//!
//! Each request carries `ConnectInfo<SocketAddr>` with the client's address,
//! as with axum's `into_make_service_with_connect_info`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{
    Activity, InProgress, OpenConnections, Place, ReceivedBody, Timeouts, TrackedBody, Watched,
};
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use super::https::Tls;
use super::unsent::Reserved;
use crate::config::ListenerConfig;

/// How long accepting pauses after an error such as running out of file
/// descriptors: retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// On shutdown, the longest a response being written may still take: a
/// client that reads gets its answer, one that does not is closed.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(1);

/// Share of the open-file limit that connections may take by default; the
/// rest is left to the database pool, Redis, Kafka, log and data files.
const CONNECTIONS_SHARE_OF_FILE_LIMIT: (u64, u64) = (3, 4);

/// The most connections allowed by default, however high the file limit.
const MAX_DEFAULT_CONNECTIONS: u64 = 65_536;

/// A bound listener and how it serves its connections.
pub(crate) struct Listener {
    listener: TcpListener,
    timeouts: Timeouts,
    max_connections: usize,
    /// `None`: plain HTTP.
    tls: Option<Arc<Tls>>,
}

impl Listener {
    /// Wraps a bound listener; reads the certificate when HTTPS is
    /// configured, so that a bad one stops start-up.
    pub(crate) fn new(listener: TcpListener, config: &ListenerConfig) -> anyhow::Result<Self> {
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        Ok(Self {
            listener,
            timeouts: Timeouts {
                header_read: config.header_read_timeout,
                idle: config.idle_timeout,
                write: config.write_timeout,
            },
            max_connections: config
                .max_connections
                .map_or_else(default_max_connections, |max| max as usize),
            tls: tls.map(Arc::new),
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Connections held at once.
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Whether connections speak HTTPS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `app` on every connection until `token` is cancelled, then
    /// stops accepting and returns once every connection has closed (see the
    /// module's header for which close at once).
    pub(crate) async fn run_until_stopped<S>(
        self,
        app: S,
        token: CancellationToken,
    ) -> anyhow::Result<()>
    where
        S: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send,
    {
        let Self {
            listener,
            timeouts,
            max_connections,
            tls,
        } = self;
        let tracker = TaskTracker::new();
        if let Some(tls) = &tls {
            tracker.spawn(Arc::clone(tls).run_reload_until_stopped(token.clone()));
        }
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        // The timeouts are kept per connection, below.
        builder.http1().header_read_timeout(None);
        let connections = Arc::new(Connections {
            app,
            builder,
            timeouts,
            tls,
        });
        let slots = Arc::new(Semaphore::new(max_connections));
        let open = Arc::new(OpenConnections::default());
        loop {
            let (stream, remote) = tokio::select! {
                () = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        pause_after_accept_error(&err, &token).await;
                        continue;
                    }
                },
            };
            // Then a slot: at the cap, the connection waiting longest for a
            // request makes room; if none is waiting, this one waits for a
            // slot, and the next ones in the backlog.
            let slot = match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    open.evict_longest();
                    tokio::select! {
                        () = token.cancelled() => break,
                        slot = Arc::clone(&slots).acquire_owned() => {
                            slot.expect("BUG: the connection slots are never closed")
                        }
                    }
                }
            };
            let place = Place::register(&open, slot);
            tracker.spawn(Arc::clone(&connections).serve(stream, remote, place, token.clone()));
        }
        // New connections are refused from here on.
        drop(listener);
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

/// Connections the kernel may hold for the listener before it accepts
/// them (the listen backlog), as Go's listeners ask: Linux lowers it to
/// `net.core.somaxconn` (4,096 by default). tokio's `TcpListener::bind` asks
/// for 1,024: a burst of clients connecting at once (thousands of load
/// balancer or benchmark connections) then overflows it, and the kernel
/// drops the handshakes beyond it, which clients retry only after a second:
/// a liveness probe connecting during the burst would time out.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds the service's listening socket (address reuse on, as with
/// `TcpListener::bind`), with [`LISTEN_BACKLOG`].
pub(crate) async fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
    let mut last_error = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(address) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the host resolved to no address",
        )
    }))
}

/// The default `HTTP_MAX_CONNECTIONS`: three quarters of the soft limit on
/// open files (768 of the common 1,024).
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct it is given.
    let files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    connections_for_file_limit(files)
}

fn connections_for_file_limit(files: u64) -> usize {
    let (share, of) = CONNECTIONS_SHARE_OF_FILE_LIMIT;
    let connections = (files / of).saturating_mul(share);
    connections.clamp(1, MAX_DEFAULT_CONNECTIONS) as usize
}

/// Errors of `accept` that concern one client only are skipped; others
/// (out of file descriptors, out of memory) are logged and accepting
/// pauses.
async fn pause_after_accept_error(err: &io::Error, token: &CancellationToken) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %err, "failed to accept a connection");
    tokio::select! {
        () = token.cancelled() => {}
        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
    }
}

/// What every connection shares.
struct Connections<S> {
    app: S,
    builder: auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
    tls: Option<Arc<Tls>>,
}

impl<S> Connections<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    /// Serves one connection until it closes; `place` frees its slot
    /// under the cap when dropped.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        place: Place,
        token: CancellationToken,
    ) {
        let accepted = Instant::now();
        // A token of its own: waiting on the listener's token would lock
        // that token's two mutexes, shared by every connection, each time
        // the connection's task is polled (tokio-util's
        // `WaitForCancellationFuture`); a child's are this connection's
        // alone, and the shared ones are locked once when it is made and
        // once when it is dropped.
        let token = token.child_token();
        let activity = Arc::clone(&place.activity);
        let evict = Arc::clone(&place.evict);
        let Some(tls) = &self.tls else {
            return self.serve_io(stream, remote, activity, token, evict).await;
        };
        // The handshake counts towards the first request's head.
        let handshake = tokio::time::timeout_at(
            accepted + self.timeouts.header_read,
            tls.acceptor().accept(stream),
        );
        let handshake = tokio::select! {
            () = token.cancelled() => return,
            () = evict.notified() => return,
            handshake = handshake => handshake,
        };
        match handshake {
            Ok(Ok(stream)) => {
                self.serve_io(stream, remote, activity, token, evict).await;
            }
            Ok(Err(err)) => tracing::debug!(%remote, error = %err, "tls handshake failed"),
            Err(_) => tracing::debug!(%remote, "tls handshake timed out"),
        }
    }

    /// `evict`: notified when the connection is to make room at the cap
    /// (it closes then if it is waiting for a request).
    async fn serve_io<I>(
        &self,
        io: I,
        remote: SocketAddr,
        activity: Arc<Activity>,
        token: CancellationToken,
        evict: Arc<Notify>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_progress = InProgress::begin(Arc::clone(&requests));
            let mut request = request.map(|body| Body::new(ReceivedBody::new(body, &requests)));
            request.extensions_mut().insert(ConnectInfo(remote));
            let response = app.clone().oneshot(request);
            async move {
                let mut response = response.await?;
                let reserved = response.extensions_mut().remove::<Reserved>();
                Ok::<_, Infallible>(
                    response.map(|body| TrackedBody::new(body, in_progress, reserved)),
                )
            }
        });
        let io = TokioIo::new(Watched {
            inner: io,
            activity: Arc::clone(&activity),
        });
        let mut connection = pin!(self.builder.serve_connection(io, service));
        // One timer per connection, never earlier than it must fire and
        // never moved by a request: it checks the deadline when it fires
        // (see `Activity::next_check`), so a busy connection costs no timer
        // or wake-up per request.
        let mut check = pin!(tokio::time::sleep_until(
            activity.next_check(self.timeouts, Instant::now())
        ));
        let mut timeouts = self.timeouts;
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%remote, error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = check.as_mut() => {
                    let now = Instant::now();
                    if activity.is_expired(timeouts, now) {
                        if activity.is_writing() {
                            tracing::debug!(%remote, "closing a connection that did not take its response in time");
                        } else {
                            tracing::debug!(%remote, "closing a connection that sent no request in time");
                        }
                        return;
                    }
                    check.as_mut().reset(activity.next_check(timeouts, now));
                }
                () = evict.notified() => {
                    if activity.waiting_since().is_some() {
                        tracing::debug!(%remote, "closing a connection waiting for a request, to make room at the connection cap");
                        return;
                    }
                }
                () = token.cancelled(), if !draining => {
                    if activity.waiting_since().is_some() || activity.is_receiving() {
                        return;
                    }
                    // Finishes the request in progress, then closes; a
                    // response being written gets little more time.
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                    timeouts.write = timeouts.write.min(SHUTDOWN_WRITE_GRACE);
                    check.as_mut().reset(activity.next_check(timeouts, Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(75),
        write: Duration::from_secs(30),
    };

    /// A burst of clients connecting at once waits in the listen backlog
    /// for the accept loop: none is dropped and left to retry a second
    /// later, as beyond tokio's default backlog of 1,024.
    #[tokio::test]
    async fn a_burst_of_connections_beyond_tokios_default_backlog_waits_to_be_accepted() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .map_or(4096, |raw| raw.trim().parse().unwrap());
        let burst = somaxconn.min(1_500);
        assert!(
            burst > 1_100,
            "net.core.somaxconn is {somaxconn}: this test needs more than 1,100"
        );
        raise_file_limit(burst as u64 + 512);
        let listener = bind("127.0.0.1", 0).await.unwrap();
        let address = listener.local_addr().unwrap();
        // Nothing accepts: every connection must fit in the backlog.
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..burst {
            connects.spawn(tokio::time::timeout(
                Duration::from_millis(700),
                TcpStream::connect(address),
            ));
        }
        let mut open = Vec::with_capacity(burst);
        while let Some(connected) = connects.join_next().await {
            if let Ok(Ok(stream)) = connected.unwrap() {
                open.push(stream);
            }
        }
        assert_eq!(open.len(), burst, "connections completed within 700 ms");
    }

    fn raise_file_limit(wanted: u64) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            if limit.rlim_cur < wanted {
                assert!(
                    limit.rlim_max >= wanted,
                    "the hard limit on open files ({}) is below the {wanted} this test needs",
                    limit.rlim_max
                );
                limit.rlim_cur = wanted;
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_has_the_header_timeout_until_a_request_then_the_idle_timeout() {
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        assert_eq!(
            activity.deadline(TIMEOUTS),
            Some(accepted + TIMEOUTS.header_read)
        );
        // The first bytes do not move the deadline: a slow head is slow.
        tokio::time::advance(Duration::from_secs(3)).await;
        activity.received();
        assert_eq!(
            activity.deadline(TIMEOUTS),
            Some(accepted + TIMEOUTS.header_read)
        );

        activity.begin_request();
        assert_eq!(activity.deadline(TIMEOUTS), None);
        assert!(activity.waiting_since().is_none());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            !activity.is_expired(TIMEOUTS, Instant::now()),
            "a request takes what it takes"
        );

        activity.end_request();
        let idle = Instant::now();
        assert_eq!(activity.deadline(TIMEOUTS), Some(idle + TIMEOUTS.idle));
        assert!(activity.waiting_since().is_some());

        tokio::time::advance(Duration::from_secs(30)).await;
        activity.received();
        let head = Instant::now();
        assert_eq!(
            activity.deadline(TIMEOUTS),
            Some(head + TIMEOUTS.header_read)
        );
        tokio::time::advance(TIMEOUTS.header_read).await;
        assert!(activity.is_expired(TIMEOUTS, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_busy_until_its_last_request_ends() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let first = InProgress::begin(Arc::clone(&activity));
        let second = InProgress::begin(Arc::clone(&activity));
        drop(first);
        assert!(activity.waiting_since().is_none());
        drop(second);
        assert!(activity.waiting_since().is_some());
    }

    /// Serves a one-route app on one in-memory connection; returns the
    /// client's end and the task serving the other.
    fn serve_in_memory(
        timeouts: Timeouts,
        token: &CancellationToken,
    ) -> (DuplexStream, JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route("/big", axum::routing::get(|| async { "x".repeat(1 << 20) }))
            .route(
                "/upload",
                axum::routing::post(|body: String| async move { body }),
            )
            .route(
                "/peer",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peer.to_string()
                }),
            );
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder.http1().header_read_timeout(None);
        let connections = Arc::new(Connections {
            app,
            builder,
            timeouts,
            tls: None,
        });
        let (client, server) = tokio::io::duplex(4096);
        let activity = Arc::new(Activity::new(Instant::now()));
        let remote = SocketAddr::from(([127, 0, 0, 1], 40_000));
        let token = token.clone();
        let evict = Arc::new(Notify::new());
        let serve = async move {
            connections
                .serve_io(server, remote, activity, token, evict)
                .await;
        };
        (client, tokio::spawn(serve))
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: highload\r\n\r\n";

    /// Reads one response of the one-route app (its body is `ok`).
    async fn read_response(client: &mut DuplexStream) -> String {
        let mut received = Vec::new();
        while !received.ends_with(b"\r\n\r\nok") {
            let mut buf = [0u8; 1024];
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response");
            received.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(received).unwrap()
    }

    /// Reads until the server closes the connection, unanswered; how long
    /// that took. Fails if it is still open after an hour (of the paused
    /// clock).
    async fn closed_unanswered(client: &mut DuplexStream) -> Duration {
        let started = Instant::now();
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(3600), client.read_to_end(&mut received))
            .await
            .expect("the connection still open after an hour")
            .unwrap();
        let received = String::from_utf8_lossy(&received);
        assert!(received.is_empty(), "answered: {received}");
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_closed_at_the_header_read_timeout() {
        let token = CancellationToken::new();
        let (mut client, serving) = serve_in_memory(TIMEOUTS, &token);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        client.write_all(b"st: high").await.unwrap();

        let took = closed_unanswered(&mut client).await;
        assert_eq!(took, TIMEOUTS.header_read - Duration::from_secs(3));
        serving.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_at_the_idle_timeout_after_its_last_response() {
        // Shorter than the header-read timeout: a deadline left from the
        // accept would close the connection too late.
        let timeouts = Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(3),
            write: Duration::from_secs(30),
        };
        let token = CancellationToken::new();
        let (mut client, serving) = serve_in_memory(timeouts, &token);
        for wait in [Duration::from_secs(1), Duration::from_secs(2)] {
            tokio::time::advance(wait).await;
            client.write_all(REQUEST).await.unwrap();
            let response = read_response(&mut client).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }

        let took = closed_unanswered(&mut client).await;
        assert_eq!(took, timeouts.idle);
        serving.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_may_wait_past_the_header_read_timeout_between_requests() {
        let token = CancellationToken::new();
        let (mut client, serving) = serve_in_memory(TIMEOUTS, &token);
        for _ in 0..2 {
            client.write_all(REQUEST).await.unwrap();
            let response = read_response(&mut client).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            tokio::time::advance(TIMEOUTS.header_read * 2).await;
        }
        let took = closed_unanswered(&mut client).await;
        assert_eq!(took, TIMEOUTS.idle - TIMEOUTS.header_read * 2);
        serving.await.unwrap();
    }

    /// The connection's timer was set for the idle timeout when a request
    /// ended; a head begun later must still be cut at its own, shorter,
    /// deadline.
    #[tokio::test(start_paused = true)]
    async fn a_slow_head_after_an_idle_wait_is_closed_at_the_header_read_timeout() {
        let token = CancellationToken::new();
        let (mut client, serving) = serve_in_memory(TIMEOUTS, &token);
        client.write_all(REQUEST).await.unwrap();
        read_response(&mut client).await;
        // Second by second, so that the server's timer fires on the way
        // and is set again while the connection is idle.
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        // Let the server read the first bytes before the clock moves on.
        tokio::task::yield_now().await;

        let took = closed_unanswered(&mut client).await;
        assert_eq!(took, TIMEOUTS.header_read);
        serving.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_idle_and_slow_connections_at_once() {
        let token = CancellationToken::new();
        let (mut idle, idle_serving) = serve_in_memory(TIMEOUTS, &token);
        idle.write_all(REQUEST).await.unwrap();
        read_response(&mut idle).await;
        let (mut slow, slow_serving) = serve_in_memory(TIMEOUTS, &token);
        slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;

        token.cancel();
        for client in [&mut idle, &mut slow] {
            let took = closed_unanswered(client).await;
            assert_eq!(took, Duration::ZERO);
        }
        idle_serving.await.unwrap();
        slow_serving.await.unwrap();
    }

    /// Asks the one-route app for its 1 MiB answer.
    const BIG: &[u8] = b"GET /big HTTP/1.1\r\nHost: highload\r\n\r\n";

    /// Waits for the connection's task to end; how long that took.
    async fn served_for(serving: JoinHandle<()>) -> Duration {
        let started = Instant::now();
        serving.await.unwrap();
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_take_its_response_is_closed_at_the_write_timeout() {
        let token = CancellationToken::new();
        let (mut client, serving) = serve_in_memory(TIMEOUTS, &token);
        client.write_all(BIG).await.unwrap();
        // The client reads nothing; the 1 MiB answer fills the pipe.
        assert_eq!(served_for(serving).await, TIMEOUTS.write);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_taken_in_time_keeps_its_connection() {
        let token = CancellationToken::new();
        let (mut client, serving) = serve_in_memory(TIMEOUTS, &token);
        client.write_all(BIG).await.unwrap();
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let whole = |received: &[u8]| {
            let head = received.windows(4).position(|w| w == b"\r\n\r\n");
            head.is_some_and(|head| received.len() - head - 4 == 1 << 20)
        };
        while !whole(&received) {
            tokio::time::advance(Duration::from_millis(100)).await;
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed while the response was read");
            received.extend_from_slice(&buf[..n]);
        }
        client.write_all(REQUEST).await.unwrap();
        assert!(read_response(&mut client).await.starts_with("HTTP/1.1 200"));
        token.cancel();
        serving.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_slow_uploads_and_slow_readers_at_once() {
        let token = CancellationToken::new();
        let (mut upload, upload_serving) = serve_in_memory(TIMEOUTS, &token);
        upload
            .write_all(b"POST /upload HTTP/1.1\r\nHost: highload\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let (mut reader, reader_serving) = serve_in_memory(TIMEOUTS, &token);
        reader.write_all(BIG).await.unwrap();
        // In steps, so that the connections' tasks run in between.
        for _ in 0..50 {
            tokio::time::advance(Duration::from_millis(100)).await;
        }

        token.cancel();
        assert_eq!(served_for(upload_serving).await, Duration::ZERO);
        assert_eq!(served_for(reader_serving).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn handlers_see_the_client_address_as_connect_info() {
        let token = CancellationToken::new();
        let (mut client, serving) = serve_in_memory(TIMEOUTS, &token);
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: highload\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("\r\n\r\n127.0.0.1:40000"), "{response}");
        serving.await.unwrap();
    }

    #[test]
    fn the_default_cap_leaves_a_quarter_of_the_file_limit_to_the_rest() {
        assert_eq!(connections_for_file_limit(1024), 768);
        assert_eq!(connections_for_file_limit(256), 192);
        assert_eq!(connections_for_file_limit(2), 1);
        assert_eq!(connections_for_file_limit(u64::MAX), 65_536);
    }
}
