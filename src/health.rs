//! Whether this instance should receive traffic, and the probes of the
//! dependencies it is built on.
//!
//! Readiness is written by the layers that learn about it (the pipeline
//! once the store is migrated, the application when shutdown begins) and
//! read by the HTTP edge, which only renders it: it lives here, below both,
//! so that no lower layer reaches up into the edge.
//!
//! Every probe runs under one time limit, so that a hung dependency reads
//! as down instead of hanging the health endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bus::{Probe, Publisher};
use crate::cache::Cache;
use crate::store::Store;

/// Whether to send traffic here. Both flags only ever go one way: the store
/// becomes ready once, shutdown begins once.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Set once the store's migrations have run; until then the API
    /// answers 503 and readiness fails.
    store_ready: AtomicBool,
    /// Set when shutdown begins, so that readiness fails first and load
    /// balancers stop sending requests before the listener closes.
    shutting_down: AtomicBool,
}

impl Readiness {
    /// The store is migrated: requests can be served.
    pub fn mark_store_ready(&self) {
        self.store_ready.store(true, Ordering::SeqCst);
    }

    /// Shutdown has begun: stop sending traffic here.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the store is migrated, so that the API can serve requests.
    pub fn is_store_ready(&self) -> bool {
        self.store_ready.load(Ordering::SeqCst)
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// What one probe of a dependency found.
#[derive(Debug)]
pub struct DependencyCheck {
    /// `sqlite`/`postgres`, `memory`/`redis`, `memory`/`kafka`.
    pub backend: &'static str,
    /// How long the probe took.
    pub latency: Duration,
    /// Why the dependency is down; `None` when it is up.
    pub error: Option<String>,
}

impl DependencyCheck {
    pub fn is_healthy(&self) -> bool {
        self.error.is_none()
    }
}

/// Every dependency, probed together.
#[derive(Debug)]
pub struct Dependencies {
    pub database: DependencyCheck,
    pub cache: DependencyCheck,
    pub producer: DependencyCheck,
    pub consumer: DependencyCheck,
}

impl Dependencies {
    pub fn are_healthy(&self) -> bool {
        self.database.is_healthy()
            && self.cache.is_healthy()
            && self.producer.is_healthy()
            && self.consumer.is_healthy()
    }
}

/// Readiness and the dependencies' probes, as the health endpoints see
/// them.
pub struct Health {
    readiness: Arc<Readiness>,
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    producer: Arc<dyn Publisher>,
    consumer: Arc<dyn Probe>,
    /// Each probe's time limit: a hung dependency reads as down.
    check_timeout: Duration,
}

impl Health {
    pub fn new(
        readiness: Arc<Readiness>,
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        producer: Arc<dyn Publisher>,
        consumer: Arc<dyn Probe>,
        check_timeout: Duration,
    ) -> Self {
        Self {
            readiness,
            store,
            cache,
            producer,
            consumer,
            check_timeout,
        }
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// A ping of the store, but unhealthy until migrations have run.
    pub async fn check_store(&self) -> DependencyCheck {
        self.check(self.store.backend(), async {
            self.store.ping().await?;
            anyhow::ensure!(
                self.readiness.is_store_ready(),
                "migrations have not run yet"
            );
            Ok(())
        })
        .await
    }

    /// Probes every dependency at once.
    pub async fn check_dependencies(&self) -> Dependencies {
        let bus = self.producer.backend();
        let (database, cache, producer, consumer) = tokio::join!(
            self.check_store(),
            self.check(self.cache.backend(), self.cache.ping()),
            self.check(bus, self.producer.check()),
            self.check(bus, self.consumer.check()),
        );
        Dependencies {
            database,
            cache,
            producer,
            consumer,
        }
    }

    async fn check<F, E>(&self, backend: &'static str, probe: F) -> DependencyCheck
    where
        F: Future<Output = Result<(), E>>,
        E: Into<anyhow::Error>,
    {
        let started = Instant::now();
        let error = match tokio::time::timeout(self.check_timeout, probe).await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("{:#}", err.into())),
            Err(_) => Some(format!("no answer within {:?}", self.check_timeout)),
        };
        DependencyCheck {
            backend,
            latency: started.elapsed(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::memory::MemoryCache;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn the_store_reads_as_down_until_it_is_marked_ready() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("health.db"), 1, Duration::from_secs(1))
            .await
            .expect("open the database");
        let (publisher, subscriber) = crate::bus::memory::channel(1);
        let readiness = Arc::new(Readiness::default());
        let health = Health::new(
            Arc::clone(&readiness),
            Arc::new(store),
            Arc::new(MemoryCache::new(10)),
            Arc::new(publisher),
            crate::bus::Subscriber::probe(&subscriber),
            Duration::from_secs(1),
        );

        let before = health.check_dependencies().await;
        assert_eq!(
            before.database.error.as_deref(),
            Some("migrations have not run yet")
        );
        assert!(!before.are_healthy());
        assert!(before.cache.is_healthy() && before.producer.is_healthy());

        readiness.mark_store_ready();
        let after = health.check_dependencies().await;
        assert!(after.are_healthy(), "{after:?}");
        assert_eq!(after.database.backend, "sqlite");
        assert!(!health.readiness().is_shutting_down());
        readiness.begin_shutdown();
        assert!(health.readiness().is_shutting_down());
        assert!(health.readiness().is_store_ready());
    }
}
