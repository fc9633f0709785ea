//! Cross-replica invalidation of the in-process tier, over Redis pub/sub.
//!
//! Every write to Redis through this service (a new value or a tombstone)
//! is sent in one pipeline with a `PUBLISH` of its key on the channel
//! `<CACHE_PREFIX>cache-invalidations`, so that deployments (and tests)
//! sharing one Redis under different prefixes do not see each other's. Every
//! replica, the writer included, subscribes and evicts each key it receives
//! from its local tier; the message `*` empties it.
//!
//! Why a lost message is harmless beyond the bound: a local entry lives at
//! most `CACHE_LOCAL_TTL`. Why a slow read cannot undo an invalidation: the
//! `PUBLISH` runs after the `SET` in Redis, so a read that still got the old
//! value took its ticket before the message was sent, and the eviction that
//! the message causes fails that ticket (see `local`).
//!
//! The subscription has its own connection. While it is not confirmed
//! (before the first `SUBSCRIBE` answer, after the connection drops, after a
//! heartbeat `PING` goes unanswered) the local tier is off and empty, so a
//! replica that may miss invalidations serves from Redis instead. It
//! resubscribes with backoff, and turns the tier back on, empty, once
//! subscribed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::local::LocalTier;
use crate::retry::Backoff;

/// The message that empties every replica's local tier (no key is `*`:
/// every key ends in `<kind>:<uuid>`).
pub(super) const CLEAR_ALL: &str = "*";

/// How often the subscription's connection is checked with a `PING`: a
/// connection that died silently is noticed within this plus
/// [`PING_TIMEOUT`].
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The longest a heartbeat or the (re)subscription may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Resubscription backoff.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The channel of a deployment's invalidations.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}cache-invalidations")
}

/// Keeps the local tier subscribed to the invalidations channel.
pub(crate) struct InvalidationListener {
    client: redis::Client,
    channel: String,
    local: Arc<LocalTier>,
}

impl InvalidationListener {
    pub(crate) fn new(
        connection: redis::ConnectionInfo,
        prefix: &str,
        local: Arc<LocalTier>,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(connection)
            .context("invalid Redis settings (REDIS_URL or REDIS_*)")?;
        Ok(Self {
            client,
            channel: channel(prefix),
            local,
        })
    }

    /// Subscribes, applies invalidations, resubscribes after failures;
    /// returns once `token` is cancelled.
    pub(crate) async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX, token.clone());
        let mut failures = 0_u64;
        loop {
            let err = tokio::select! {
                biased;
                () = token.cancelled() => return Ok(()),
                err = self.listen(&mut backoff, &mut failures) => err,
            };
            self.local.disable();
            failures += 1;
            let delay = backoff.next_delay();
            if failures == 1 {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "cache invalidations unavailable; the in-process tier is off until resubscribed"
                );
            } else {
                tracing::debug!(
                    error = format!("{err:#}"),
                    ?delay,
                    "cache invalidations: retrying"
                );
            }
            if !backoff.wait(delay).await {
                return Ok(());
            }
        }
    }

    /// One subscription, until it fails: the error says why.
    async fn listen(&self, backoff: &mut Backoff, failures: &mut u64) -> anyhow::Error {
        let subscribed = async {
            let pubsub = self
                .client
                .get_async_pubsub()
                .await
                .context("failed to connect to Redis for cache invalidations")?;
            let (mut sink, stream) = pubsub.split();
            sink.subscribe(&self.channel)
                .await
                .context("failed to subscribe to cache invalidations")?;
            anyhow::Ok((sink, stream))
        };
        let (mut sink, mut stream) = match tokio::time::timeout(PING_TIMEOUT, subscribed).await {
            Ok(Ok(subscribed)) => subscribed,
            Ok(Err(err)) => return err,
            Err(_) => return anyhow::anyhow!("subscribing took longer than {PING_TIMEOUT:?}"),
        };
        self.local.enable();
        backoff.reset();
        if *failures > 0 {
            tracing::info!(
                channel = %self.channel,
                "cache invalidations subscribed again"
            );
        }
        *failures = 0;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.apply(&message),
                    None => return anyhow::anyhow!("the subscription's connection closed"),
                },
                _ = heartbeat.tick() => {
                    match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => {
                            return anyhow::Error::new(err).context("heartbeat failed");
                        }
                        Err(_) => {
                            return anyhow::anyhow!("heartbeat unanswered within {PING_TIMEOUT:?}");
                        }
                    }
                }
            }
        }
    }

    fn apply(&self, message: &redis::Msg) {
        match std::str::from_utf8(message.get_payload_bytes()) {
            Ok(CLEAR_ALL) => self.local.clear(),
            Ok(key) => self.local.evict_invalidated(key),
            // Not ours: evicting everything is the safe answer.
            Err(_) => self.local.clear(),
        }
    }
}
