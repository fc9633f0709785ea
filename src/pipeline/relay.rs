//! The outbox relay: moves committed outbox rows onto the bus.
//!
//! Loop: lease a batch of rows (oldest first), publish them, delete the ones
//! the bus acknowledged, release the rest. A row is deleted only after its
//! message is durable, so a crash at any point publishes it again rather
//! than losing it. While the bus is down the relay backs off and retries;
//! writes keep succeeding because they only touch the database.
//!
//! Leases are short ([`LEASE`]) and renewed while a batch is being
//! published, however long the bus takes: rows claimed by a process that
//! was killed are claimed again within [`LEASE`], while a live relay keeps
//! its rows from other replicas. Each claim has an id of its own, written
//! on its rows: a relay renews and releases only rows that still carry it.
//! A relay whose renewals fail for longer than the lease (the database is
//! out of reach) may see another one claim and publish its rows too; the
//! bus's contract is at least once, and the processor drops duplicates by
//! message id.
//!
//! Each message is published in a span of its own (`outbox publish`), in
//! the trace of the change it announces (stored with its row): the message
//! carries that span on, so that its worker continues the same trace.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Span;
use uuid::Uuid;

use crate::bus::{Message, Publisher};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::store::{OutboxRow, Store};
use crate::telemetry::trace_context::{self, TraceContext};

/// How long a claim reserves rows for this relay without a renewal: the
/// longest that rows claimed by a process that died wait to be claimed
/// again.
const LEASE: Duration = Duration::from_secs(5);

/// How often a relay renews the lease of the batch it is publishing: a
/// fifth of it, so that a few slow or failed renewals in a row do not let
/// it run out.
const RENEW_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct OutboxRelay {
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    /// Rows per claim and publish.
    pub batch_size: u32,
    /// How often to look for rows written by other replicas.
    pub poll_interval: Duration,
    /// Poked by every local write, so that its message goes out at once
    /// instead of at the next poll.
    pub wakeup: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

/// Batches handed to the bus whose answers are awaited, oldest first.
type InFlight = VecDeque<JoinHandle<anyhow::Result<usize>>>;

impl OutboxRelay {
    /// Relays until `token` is cancelled, then publishes what is left (as
    /// long as the bus accepts it) and returns.
    ///
    /// While full batches come (a backlog), up to
    /// [`Publisher::max_in_flight`] are out at once: the next batch is
    /// claimed and handed to the bus while the brokers acknowledge the one
    /// before, so that a backlog drains at more than a batch per round trip.
    pub(crate) async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let relay = Arc::new(self);
        let depth = relay.publisher.max_in_flight().max(1);
        let mut in_flight = InFlight::with_capacity(depth);
        // Capped low: while the bus is down each attempt already waits out
        // the producer's delivery timeout, and once it is back the backlog
        // should move soon.
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            token.clone(),
        );
        while !token.is_cancelled() {
            match relay.step(&mut in_flight, depth, &token).await {
                Ok(()) => backoff.reset(),
                Err(err) => {
                    // What else is out failed too or succeeded; either way
                    // its rows are settled before the pause.
                    let _ = settle_all(&mut in_flight).await;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = format!("{err:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "outbox relay failed; rows stay in the outbox"
                    );
                    if !backoff.wait(delay).await {
                        break;
                    }
                }
            }
        }
        let _ = settle_all(&mut in_flight).await;
        relay.drain().await;
        Ok(())
    }

    /// One move of the relay: settles the oldest batch when `depth` are out,
    /// else hands the next one to the bus; after a batch that was not full
    /// (or none), settles every batch out, then waits for a write or the
    /// poll interval.
    async fn step(
        self: &Arc<Self>,
        in_flight: &mut InFlight,
        depth: usize,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        if in_flight.len() >= depth {
            return settle_oldest(in_flight).await.map(drop);
        }
        let full = match self.start_batch().await? {
            Some((rows, batch)) => {
                in_flight.push_back(batch);
                rows == self.batch_size as usize
            }
            None => false,
        };
        if !full {
            // No backlog: the rows written while the brokers answer go out
            // after, together, instead of as many small batches that would
            // each cost a claim and a request.
            settle_all(in_flight).await?;
            tokio::select! {
                () = token.cancelled() => {}
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        Ok(())
    }

    /// Claims the next rows and hands their messages to the bus; returns how
    /// many, and the task that settles them once the bus has answered.
    async fn start_batch(
        self: &Arc<Self>,
    ) -> anyhow::Result<Option<(usize, JoinHandle<anyhow::Result<usize>>)>> {
        let Some((holder, rows)) = self.claim().await? else {
            return Ok(None);
        };
        let count = rows.len();
        let relay = Arc::clone(self);
        let mut publishing = Box::pin(async move { relay.publish_rows(holder, rows).await });
        // Polled once here: a publish hands its messages to the bus, in
        // order, when first polled (see `Publisher::max_in_flight`), so the
        // next batch's messages go after these.
        let first = std::future::poll_fn(|cx| Poll::Ready(publishing.as_mut().poll(cx))).await;
        let batch = match first {
            Poll::Ready(relayed) => tokio::spawn(std::future::ready(relayed)),
            Poll::Pending => tokio::spawn(publishing),
        };
        Ok(Some((count, batch)))
    }

    /// Publishes until the outbox is empty or the bus refuses.
    async fn drain(&self) {
        let mut drained = 0;
        loop {
            match self.relay_batch().await {
                Ok(0) => break,
                Ok(relayed) => drained += relayed,
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "outbox not drained; the remaining rows are published after restart"
                    );
                    break;
                }
            }
        }
        tracing::info!(drained, "outbox relay stopped");
    }

    /// The span of one message's publishing, in the trace of its row.
    fn publish_span(&self, row: &OutboxRow) -> Span {
        let span = tracing::info_span!(
            "outbox publish",
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = self.publisher.backend(),
            outbox_id = row.id,
            user_id = row.key,
        );
        if let Some(trace) = &row.trace {
            trace_context::continue_trace(&span, trace);
        }
        span
    }

    /// Leases the next batch of rows under a new claim id; `None` when no
    /// row is free.
    async fn claim(&self) -> anyhow::Result<Option<(Uuid, Vec<OutboxRow>)>> {
        let holder = Uuid::new_v4();
        let rows = self
            .store
            .claim_outbox(holder, self.batch_size, LEASE)
            .await?;
        Ok((!rows.is_empty()).then_some((holder, rows)))
    }

    /// One claim–publish–settle round; returns how many rows it published.
    async fn relay_batch(&self) -> anyhow::Result<usize> {
        match self.claim().await? {
            Some((holder, rows)) => self.publish_rows(holder, rows).await,
            None => Ok(0),
        }
    }

    /// Publishes the rows `holder` claimed, then deletes those the bus
    /// acknowledged and releases the rest; returns how many it published.
    async fn publish_rows(&self, holder: Uuid, rows: Vec<OutboxRow>) -> anyhow::Result<usize> {
        // Open until the bus has the message (or refused it).
        let spans: Vec<Span> = rows.iter().map(|row| self.publish_span(row)).collect();
        let traces: Vec<Option<TraceContext>> = rows
            .iter()
            .zip(&spans)
            .map(|(row, span)| trace_context::of_span(span).or_else(|| row.trace.clone()))
            .collect();
        let messages: Vec<_> = rows
            .iter()
            .zip(&traces)
            .map(|(row, trace)| Message {
                key: row.key.as_bytes(),
                payload: row.payload.as_bytes(),
                trace: trace.as_ref(),
            })
            .collect();
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let results = self
            .holding_lease(holder, &ids, self.publisher.publish(&messages))
            .await;
        let mut published = Vec::with_capacity(rows.len());
        let mut failed = Vec::new();
        let mut first_error = None;
        for ((row, result), span) in rows.iter().zip(results).zip(&spans) {
            match result {
                Ok(()) => published.push(row.id),
                Err(err) => {
                    span.record("otel.status_code", "ERROR");
                    failed.push(row.id);
                    first_error.get_or_insert(err);
                }
            }
        }
        self.metrics.events_published.inc_by(published.len() as u64);
        self.store.complete_outbox(&published).await?;
        self.store.release_outbox(holder, &failed).await?;
        tracing::debug!(
            published = published.len(),
            failed = failed.len(),
            "outbox batch relayed"
        );
        match first_error {
            None => Ok(published.len()),
            Some(err) => Err(anyhow::Error::new(err).context(format!(
                "failed to publish {} of {} outbox rows",
                failed.len(),
                rows.len()
            ))),
        }
    }

    /// Runs `work` on the rows `ids`, renewing `holder`'s lease on them
    /// every [`RENEW_EVERY`] until it is done.
    async fn holding_lease<T>(
        &self,
        holder: Uuid,
        ids: &[i64],
        work: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let mut renewals =
            tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = renewals.tick() => {}
            }
            // `work` waits meanwhile; it is the bus's work, done by the
            // producer in the background, so it loses only this round trip.
            match self.store.renew_outbox(holder, ids, LEASE).await {
                Ok(held) if held.len() == ids.len() => {}
                Ok(held) => tracing::warn!(
                    lost = ids.len() - held.len(),
                    rows = ids.len(),
                    "outbox lease ran out before a renewal; another relay may publish those rows too"
                ),
                Err(err) => tracing::warn!(
                    error = format!("{err:#}"),
                    "failed to renew the outbox lease; retrying"
                ),
            }
        }
    }
}

/// Waits until the oldest batch out is settled; returns how many rows it
/// published.
async fn settle_oldest(in_flight: &mut InFlight) -> anyhow::Result<usize> {
    match in_flight.pop_front() {
        Some(oldest) => oldest
            .await
            .map_err(|err| anyhow::anyhow!("outbox batch task failed: {err}"))?,
        None => Ok(0),
    }
}

/// Waits until every batch out is settled (each task deletes or releases
/// its own rows); the first failure, if any.
async fn settle_all(in_flight: &mut InFlight) -> anyhow::Result<()> {
    let mut first_failure = Ok(());
    while !in_flight.is_empty() {
        if let Err(err) = settle_oldest(in_flight).await {
            first_failure = first_failure.and(Err(err));
        }
    }
    first_failure
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::time::Instant;
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// Starts shutdown when the relay warns of its `nth` failure, that is
    /// just before it pauses for the `nth` time: the moment a relay that
    /// ignored shutdown would wait longest.
    struct ShutdownOnFailure {
        nth: usize,
        failures: AtomicUsize,
        token: CancellationToken,
        cancelled_at: Arc<Mutex<Option<Instant>>>,
    }

    impl<S: tracing::Subscriber> Layer<S> for ShutdownOnFailure {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let warning = *event.metadata().level() == tracing::Level::WARN;
            if warning && self.failures.fetch_add(1, Ordering::SeqCst) + 1 == self.nth {
                *self.cancelled_at.lock().unwrap() = Some(Instant::now());
                self.token.cancel();
            }
        }
    }

    #[tokio::test]
    async fn backing_off_ends_within_100_ms_of_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        // Closed pools: every claim fails, so the relay keeps backing off.
        let store = SqliteStore::open(&dir.path().join("closed.db"), 1, Duration::from_secs(1))
            .await
            .expect("open the database");
        store.close().await;
        // From here on time only moves when every task waits: what is
        // measured is the relay's waiting, not the machine's load.
        tokio::time::pause();
        let (publisher, _subscriber) = crate::bus::memory::channel(1);
        let relay = OutboxRelay {
            store: Arc::new(store),
            publisher: Arc::new(publisher),
            batch_size: 10,
            poll_interval: Duration::from_secs(10),
            wakeup: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new()),
        };
        let token = CancellationToken::new();
        // The fourth pause is 400 to 800 ms long.
        let cancelled_at = Arc::new(Mutex::new(None));
        let shutdown = ShutdownOnFailure {
            nth: 4,
            failures: AtomicUsize::new(0),
            token: token.clone(),
            cancelled_at: Arc::clone(&cancelled_at),
        };
        // The relay logs on this thread: it runs on this test's runtime.
        let _logs = tracing::subscriber::set_default(tracing_subscriber::registry().with(shutdown));

        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), relay.run_until_stopped(token))
            .await
            .expect("the relay stops backing off")
            .expect("the relay stops cleanly");
        let cancelled_at = cancelled_at.lock().unwrap().expect("shutdown began");
        assert!(
            cancelled_at - started >= Duration::from_millis(350),
            "three pauses came first"
        );
        let stopped_after = cancelled_at.elapsed();
        assert!(
            stopped_after < Duration::from_millis(100),
            "stopped {stopped_after:?} after shutdown began"
        );
    }

    /// When the lease of the relay's claimed rows runs out, by the store's
    /// clock: `None` while no row is leased.
    async fn leased_until(path: &std::path::Path) -> Option<chrono::DateTime<chrono::Utc>> {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let until: Option<String> = sqlx::query_scalar("SELECT MIN(locked_until) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        until.map(|t| t.parse().unwrap())
    }

    /// A relay keeps its rows leased while it publishes, however long that
    /// takes, and a relay that dies (its task dropped mid-publish, as
    /// `kill -9` leaves the database) leaves them leased for at most
    /// [`LEASE`].
    #[tokio::test]
    async fn a_killed_relay_leaves_its_rows_leased_for_at_most_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::migrated_in(dir.path(), 1).await;
        write_users(&store, 1).await;
        let store: Arc<dyn Store> = Arc::new(store);
        let relay = OutboxRelay {
            store: Arc::clone(&store),
            publisher: Arc::new(TestBus::default()),
            batch_size: 10,
            poll_interval: Duration::from_secs(10),
            wakeup: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new()),
        };
        let running = tokio::spawn(async move { relay.relay_batch().await });
        let first = loop {
            if let Some(until) = leased_until(&path).await {
                break until;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Renewed while the publish goes on.
        let renewed = loop {
            let until = leased_until(&path).await.expect("still leased");
            if until > first {
                break until;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        let left = renewed - chrono::Utc::now();
        assert!(
            left <= chrono::Duration::from_std(LEASE).unwrap(),
            "rows stay leased {left} after the relay died"
        );
        store.close().await;
    }

    /// A bus that acknowledges after `ack_after` (never when `None`: a
    /// publish that is still going on), and notes in what order messages
    /// reached it and how many publishes were out at once.
    #[derive(Default)]
    struct TestBus {
        ack_after: Option<Duration>,
        keys: Mutex<Vec<String>>,
        out: AtomicUsize,
        most_out: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Publisher for TestBus {
        fn backend(&self) -> &'static str {
            "test"
        }
        async fn prepare(&self) -> anyhow::Result<()> {
            Ok(())
        }
        async fn publish(
            &self,
            messages: &[crate::bus::Message<'_>],
        ) -> Vec<Result<(), crate::bus::PublishError>> {
            // Taken in the first poll, as the trait asks of a bus that
            // allows more than one publish out.
            let keys = messages
                .iter()
                .map(|m| String::from_utf8(m.key.to_vec()).unwrap());
            self.keys.lock().unwrap().extend(keys);
            let out = self.out.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_out.fetch_max(out, Ordering::SeqCst);
            match self.ack_after {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
            self.out.fetch_sub(1, Ordering::SeqCst);
            messages.iter().map(|_| Ok(())).collect()
        }
        fn max_in_flight(&self) -> usize {
            4
        }
        async fn dead_letter(&self, _: &crate::bus::Delivery, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        async fn check(&self) -> anyhow::Result<()> {
            Ok(())
        }
        async fn redelivery_window(&self) -> anyhow::Result<Option<Duration>> {
            Ok(None)
        }
        async fn flush(&self, _: Duration) {}
    }

    /// Writes `n` users; returns their ids in the order written.
    async fn write_users(store: &SqliteStore, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let (user, message) = crate::store::new_user(&format!("relay{i}@example.com"));
            ids.push(user.id.to_string());
            store
                .write_one(crate::store::Write::CreateUser { user, message })
                .await
                .unwrap();
        }
        ids
    }

    #[tokio::test]
    async fn batches_overlap_on_the_bus_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::migrated_in(dir.path(), 1).await;
        let written = write_users(&store, 100).await;
        let store: Arc<dyn Store> = Arc::new(store);
        let bus = Arc::new(TestBus {
            ack_after: Some(Duration::from_millis(50)),
            ..TestBus::default()
        });
        let relay = OutboxRelay {
            store: Arc::clone(&store),
            publisher: Arc::clone(&bus) as Arc<dyn Publisher>,
            batch_size: 10,
            poll_interval: Duration::from_secs(10),
            wakeup: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new()),
        };
        let token = CancellationToken::new();
        let running = tokio::spawn(relay.run_until_stopped(token.clone()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.outbox_backlog().await.unwrap().rows > 0 {
            assert!(Instant::now() < deadline, "the outbox was not emptied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        token.cancel();
        running.await.unwrap().unwrap();

        assert_eq!(
            *bus.keys.lock().unwrap(),
            written,
            "each message once, in order"
        );
        let most_out = bus.most_out.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&most_out),
            "{most_out} batches were out at once"
        );
    }
}
