//! Waiting without sleeping and hoping: poll until a condition holds, with
//! a deadline; and ports that nothing listens on.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits before failing the test.
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Some`, failing the test after 30 s.
pub(crate) async fn eventually<T, F, Fut>(probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, probe).await
}

/// Polls `probe` until it returns `Some`, failing the test after `limit`.
pub(crate) async fn eventually_within<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
