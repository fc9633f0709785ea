//! Whether this instance should receive traffic, and the probes of the
//! dependencies it is built on.
//!
//! Readiness is written by the layers that learn about it (the pipeline
//! once the store is migrated, the application when shutdown begins) and
//! read by the HTTP edge, which only renders it: it lives here, below both,
//! so that no lower layer reaches up into the edge.
//!
//! The dependencies are probed in rounds, in the background, once per
//! `HEALTH_CHECK_INTERVAL`; the health endpoints report the latest round,
//! so that their cost does not depend on the dependencies and a crowd of
//! callers adds no probes. A caller that finds no round younger than the
//! interval (at start, or when the background round is late) starts one
//! itself, unless one is under way: then it is answered with the latest
//! results. Rounds never overlap, and one begins only once the latest
//! results are an interval old, so the dependencies see one probe each per
//! interval, however many callers there are.
//!
//! Every probe runs under one time limit, so that a hung dependency reads
//! as down instead of hanging the health endpoints. A failed probe is
//! reported by a generic reason (`unavailable`, or the time limit), since
//! its error may name addresses and operating-system errors;
//! `HEALTH_DETAIL` reports the whole error instead. The whole error is
//! logged either way, when the dependency goes down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::{Probe, Publisher};
use crate::cache::Cache;
use crate::metrics::{DependencyLabels, Metrics};
use crate::store::Store;

/// Whether to send traffic here. Both flags only ever go one way: the store
/// becomes ready once, shutdown begins once.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    /// Set once the store's migrations have run; until then the API
    /// answers 503 and readiness fails.
    store_ready: AtomicBool,
    /// Set when shutdown begins, so that readiness fails first and load
    /// balancers stop sending requests before the listener closes.
    shutting_down: AtomicBool,
    /// Counts the start-up steps done (store migrated, bus prepared): a
    /// round of probes made before the latest one is stale, whatever its
    /// age, so that `/health` does not report for an interval what those
    /// steps have just fixed (a topic that did not exist yet).
    steps: AtomicU64,
}

impl Readiness {
    /// The store is migrated: requests can be served.
    pub(crate) fn mark_store_ready(&self) {
        self.store_ready.store(true, Ordering::SeqCst);
        self.steps.fetch_add(1, Ordering::SeqCst);
    }

    /// The bus is prepared (its topics exist).
    pub(crate) fn mark_bus_ready(&self) {
        self.steps.fetch_add(1, Ordering::SeqCst);
    }

    fn steps(&self) -> u64 {
        self.steps.load(Ordering::SeqCst)
    }

    /// Shutdown has begun: stop sending traffic here.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the store is migrated, so that the API can serve requests.
    pub(crate) fn is_store_ready(&self) -> bool {
        self.store_ready.load(Ordering::SeqCst)
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The reason reported for a failed probe, unless `HEALTH_DETAIL` is set.
const UNAVAILABLE: &str = "unavailable";

/// The reason reported for a store that answers but is not migrated.
const NOT_MIGRATED: &str = "migrations have not run yet";

/// What one probe of a dependency found.
#[derive(Debug, Clone)]
pub(crate) struct DependencyCheck {
    /// `sqlite`/`postgres`, `memory`/`redis`, `memory`/`kafka`.
    pub backend: &'static str,
    /// How long the probe took.
    pub latency: Duration,
    /// Why the dependency is down, as reported; `None` when it is up.
    pub error: Option<String>,
    /// When the probe finished.
    pub checked_at: DateTime<Utc>,
    /// When the probe finished, on the monotonic clock (for its age).
    finished: Instant,
    /// The whole error, for the log, whatever is reported.
    cause: Option<String>,
}

impl DependencyCheck {
    pub(crate) fn is_healthy(&self) -> bool {
        self.error.is_none()
    }

    /// How long ago the probe finished.
    pub(crate) fn age(&self) -> Duration {
        self.finished.elapsed()
    }
}

/// Every dependency, probed together.
#[derive(Debug, Clone)]
pub(crate) struct Dependencies {
    pub database: DependencyCheck,
    pub cache: DependencyCheck,
    pub producer: DependencyCheck,
    pub consumer: DependencyCheck,
}

impl Dependencies {
    /// Each check, by the name the health report gives it.
    fn by_name(&self) -> [(&'static str, &DependencyCheck); 4] {
        [
            ("database", &self.database),
            ("cache", &self.cache),
            ("producer", &self.producer),
            ("consumer", &self.consumer),
        ]
    }

    pub(crate) fn are_healthy(&self) -> bool {
        self.database.is_healthy()
            && self.cache.is_healthy()
            && self.producer.is_healthy()
            && self.consumer.is_healthy()
    }
}

/// One round of probes.
#[derive(Debug)]
struct Round {
    /// When the round began: the next one is due an interval later.
    started: Instant,
    /// [`Readiness`]'s start-up steps done when it began.
    steps: u64,
    dependencies: Dependencies,
}

/// How the dependencies are probed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthSettings {
    /// Each probe's time limit: a hung dependency reads as down.
    pub check_timeout: Duration,
    /// The time between rounds (`HEALTH_CHECK_INTERVAL`).
    pub interval: Duration,
    /// Report each failure's whole error (`HEALTH_DETAIL`).
    pub detail: bool,
}

/// Readiness and the dependencies' probes, as the health endpoints see
/// them.
pub(crate) struct Health {
    readiness: Arc<Readiness>,
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    producer: Arc<dyn Publisher>,
    consumer: Arc<dyn Probe>,
    settings: HealthSettings,
    /// Counts the probes of each dependency.
    metrics: Arc<Metrics>,
    /// The latest round, replaced whole by the next one.
    latest: Mutex<Option<Arc<Round>>>,
    /// Held while a round runs, so that rounds never overlap.
    probing: tokio::sync::Mutex<()>,
}

impl Health {
    pub(crate) fn new(
        readiness: Arc<Readiness>,
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        producer: Arc<dyn Publisher>,
        consumer: Arc<dyn Probe>,
        settings: HealthSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            readiness,
            store,
            cache,
            producer,
            consumer,
            settings,
            metrics,
            latest: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The latest results, probing first only when they are older than the
    /// interval and no round is under way. The store reads as down until
    /// it is migrated, whatever its probe found.
    pub(crate) async fn dependencies(&self) -> Dependencies {
        let round = match self.fresh() {
            Some(round) => round,
            None => match self.probing.try_lock() {
                Ok(probing) => self.probe_unless_fresh(probing).await,
                Err(_) => match self.latest() {
                    Some(round) => round,
                    // The first round is under way: wait for it.
                    None => self.probe_unless_fresh(self.probing.lock().await).await,
                },
            },
        };
        let mut dependencies = round.dependencies.clone();
        if dependencies.database.is_healthy() && !self.readiness.is_store_ready() {
            dependencies.database.error = Some(NOT_MIGRATED.to_owned());
        }
        dependencies
    }

    /// Probes every dependency once per interval until `token` is
    /// cancelled.
    pub(crate) async fn run_until_stopped(&self, token: CancellationToken) -> anyhow::Result<()> {
        loop {
            let due = self
                .latest()
                .map_or_else(Instant::now, |round| round.started + self.settings.interval);
            let round = async {
                tokio::time::sleep_until(due).await;
                // A caller may have probed meanwhile: then this round waits
                // an interval from that one.
                self.probe_unless_fresh(self.probing.lock().await).await;
            };
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = round => {}
            }
        }
    }

    fn latest(&self) -> Option<Arc<Round>> {
        self.latest
            .lock()
            .expect("BUG: nothing panics while holding the latest round")
            .clone()
    }

    /// The latest round, if it began less than an interval ago and after
    /// the latest start-up step.
    fn fresh(&self) -> Option<Arc<Round>> {
        self.latest().filter(|round| {
            round.started.elapsed() < self.settings.interval
                && round.steps == self.readiness.steps()
        })
    }

    /// Runs a round, holding `_probing`, unless a fresh one has just
    /// finished.
    async fn probe_unless_fresh(&self, _probing: tokio::sync::MutexGuard<'_, ()>) -> Arc<Round> {
        if let Some(round) = self.fresh() {
            return round;
        }
        let round = Arc::new(self.probe_all().await);
        let previous = self
            .latest
            .lock()
            .expect("BUG: nothing panics while holding the latest round")
            .replace(Arc::clone(&round));
        log_changes(previous.as_deref(), &round);
        round
    }

    /// Probes every dependency at once.
    async fn probe_all(&self) -> Round {
        let started = Instant::now();
        let steps = self.readiness.steps();
        let bus = self.producer.backend();
        let (database, cache, producer, consumer) = tokio::join!(
            self.probe("database", self.store.backend(), self.store.ping()),
            self.probe("cache", self.cache.backend(), self.cache.ping()),
            self.probe("producer", bus, self.producer.check()),
            self.probe("consumer", bus, self.consumer.check()),
        );
        Round {
            started,
            steps,
            dependencies: Dependencies {
                database,
                cache,
                producer,
                consumer,
            },
        }
    }

    async fn probe<F, E>(
        &self,
        dependency: &'static str,
        backend: &'static str,
        probe: F,
    ) -> DependencyCheck
    where
        F: Future<Output = Result<(), E>>,
        E: Into<anyhow::Error>,
    {
        self.metrics
            .health_checks
            .get_or_create(&DependencyLabels { dependency })
            .inc();
        let started = Instant::now();
        let timeout = self.settings.check_timeout;
        // (what is reported, the whole error)
        let (error, cause) = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(())) => (None, None),
            Ok(Err(err)) => {
                let cause = format!("{:#}", err.into());
                let error = if self.settings.detail {
                    cause.clone()
                } else {
                    UNAVAILABLE.to_owned()
                };
                (Some(error), Some(cause))
            }
            Err(_) => {
                let error = format!("no answer within {timeout:?}");
                (Some(error.clone()), Some(error))
            }
        };
        DependencyCheck {
            backend,
            latency: started.elapsed(),
            error,
            checked_at: Utc::now(),
            finished: Instant::now(),
            cause,
        }
    }
}
/// Logs each dependency that went down (with its whole error) or came
/// back since the `previous` round: once per change, not once per round.
fn log_changes(previous: Option<&Round>, round: &Round) {
    for (index, (dependency, check)) in round.dependencies.by_name().into_iter().enumerate() {
        let was_healthy = previous.is_none_or(|p| p.dependencies.by_name()[index].1.is_healthy());
        match (&check.cause, was_healthy) {
            (Some(cause), true) => tracing::warn!(
                dependency,
                backend = check.backend,
                error = cause.as_str(),
                "dependency is down"
            ),
            (None, false) => {
                tracing::info!(
                    dependency,
                    backend = check.backend,
                    "dependency is up again"
                )
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemorySubscriber;
    use crate::cache::memory::MemoryCache;
    use crate::store::sqlite::SqliteStore;

    /// Health over embedded backends, rounds `interval` apart, and the
    /// bus's subscriber (the consumer is down once it is dropped).
    async fn embedded(
        dir: &tempfile::TempDir,
        interval: Duration,
    ) -> (Arc<Health>, Arc<Metrics>, MemorySubscriber) {
        let store = SqliteStore::open(&dir.path().join("health.db"), 1, Duration::from_secs(1))
            .await
            .expect("open the database");
        let (publisher, subscriber) = crate::bus::memory::channel(1);
        let metrics = Arc::new(Metrics::new());
        let health = Health::new(
            Arc::new(Readiness::default()),
            Arc::new(store),
            Arc::new(MemoryCache::new(10)),
            Arc::new(publisher),
            crate::bus::Subscriber::probe(&subscriber),
            HealthSettings {
                check_timeout: Duration::from_secs(1),
                interval,
                detail: false,
            },
            Arc::clone(&metrics),
        );
        (Arc::new(health), metrics, subscriber)
    }

    /// Probes of `dependency` so far.
    fn probes(metrics: &Metrics, dependency: &'static str) -> u64 {
        metrics
            .health_checks
            .get_or_create(&DependencyLabels { dependency })
            .get()
    }

    #[tokio::test]
    async fn the_store_reads_as_down_until_it_is_marked_ready() {
        let dir = tempfile::tempdir().unwrap();
        let (health, _, _subscriber) = embedded(&dir, Duration::from_secs(60)).await;

        let before = health.dependencies().await;
        assert_eq!(before.database.error.as_deref(), Some(NOT_MIGRATED));
        assert!(!before.are_healthy());
        assert!(before.cache.is_healthy() && before.producer.is_healthy());

        // Readiness is read live: no new round is needed to see it.
        health.readiness().mark_store_ready();
        let after = health.dependencies().await;
        assert!(after.are_healthy(), "{after:?}");
        assert_eq!(after.database.backend, "sqlite");
        assert!(!health.readiness().is_shutting_down());
        health.readiness().begin_shutdown();
        assert!(health.readiness().is_shutting_down());
        assert!(health.readiness().is_store_ready());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_round_of_probes() {
        let dir = tempfile::tempdir().unwrap();
        let (health, metrics, _subscriber) = embedded(&dir, Duration::from_secs(60)).await;
        let callers: Vec<_> = (0..200)
            .map(|_| {
                let health = Arc::clone(&health);
                tokio::spawn(async move { health.dependencies().await })
            })
            .collect();
        for caller in callers {
            let dependencies = caller.await.unwrap();
            assert!(dependencies.cache.is_healthy());
        }
        for dependency in ["database", "cache", "producer", "consumer"] {
            assert_eq!(probes(&metrics, dependency), 1, "{dependency}");
        }
    }

    #[tokio::test]
    async fn a_start_up_step_makes_the_latest_round_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (health, metrics, _subscriber) = embedded(&dir, Duration::from_secs(60)).await;
        health.dependencies().await;
        health.dependencies().await;
        assert_eq!(probes(&metrics, "consumer"), 1, "fresh for a minute");
        // The topics now exist: what the round saw before may be fixed.
        health.readiness().mark_bus_ready();
        health.dependencies().await;
        assert_eq!(probes(&metrics, "consumer"), 2);
        health.dependencies().await;
        assert_eq!(probes(&metrics, "consumer"), 2, "fresh again");
    }

    #[tokio::test]
    async fn callers_finding_the_latest_round_stale_start_one_more() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_secs(2);
        let (health, metrics, _subscriber) = embedded(&dir, interval).await;
        let crowd = || futures_util::future::join_all((0..200).map(|_| health.dependencies()));
        crowd().await;
        assert_eq!(probes(&metrics, "database"), 1);

        tokio::time::pause();
        tokio::time::advance(interval / 2).await;
        crowd().await;
        assert_eq!(probes(&metrics, "database"), 1, "still fresh");

        tokio::time::advance(interval).await;
        crowd().await;
        for dependency in ["database", "cache", "producer", "consumer"] {
            assert_eq!(probes(&metrics, dependency), 2, "{dependency}");
        }
        crowd().await;
        assert_eq!(probes(&metrics, "cache"), 2, "fresh again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_background_rounds_stop_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let (health, metrics, _subscriber) = embedded(&dir, Duration::from_millis(100)).await;
        let token = CancellationToken::new();
        let task = tokio::spawn({
            let (health, token) = (Arc::clone(&health), token.clone());
            async move { health.run_until_stopped(token).await }
        });
        while probes(&metrics, "cache") < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the rounds stop")
            .unwrap()
            .expect("cleanly");
    }
}
