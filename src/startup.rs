//! The application: builds the backends, binds the listener, runs the HTTP
//! server and the background tasks, and drains them in order on shutdown.
//!
//! Shutdown order, all under `SHUTDOWN_TIMEOUT`:
//! 1. readiness answers 503, so load balancers stop sending requests;
//! 2. the HTTP server stops accepting and finishes in-flight requests, and
//!    writes started by them complete;
//! 3. the outbox relay publishes what is left in the outbox (as long as the
//!    bus accepts it) — before the consumer stops, because the in-process
//!    bus acknowledges a publish only once the message is processed;
//! 4. the consumer stops fetching, the worker pool finishes its queue, and
//!    the subscriber commits its final offsets;
//! 5. the producer flushes, the store's pool closes.
//!
//! A background task that stops on its own before shutdown is a failure:
//! the rest is drained the same way and the process exits non-zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::outbox::OutboxRelay;
use crate::bus::{self, Publisher, Subscriber};
use crate::cache::memory::MemoryCache;
use crate::cache::{Cache, ReadThrough};
use crate::config::{Config, DatabaseBackend};
use crate::http::health::Health;
use crate::http::{self, AppState, HttpLimits};
use crate::service::Service;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::worker::{self, EventProcessor, WorkerPool};

/// Time limit of each health check.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Application {
    config: Config,
    listener: TcpListener,
    port: u16,
    state: AppState,
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    subscriber: Box<dyn Subscriber>,
    relay_wakeup: Arc<Notify>,
    /// Cancelled to begin a graceful shutdown.
    shutdown: CancellationToken,
}

impl Application {
    /// Connects the backends (running migrations) and binds the listener;
    /// nothing is served until [`Application::run_until_stopped`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        let store = build_store(&config).await?;
        let cache = build_cache(&config)?;
        let (publisher, subscriber) = build_bus(&config)?;

        let relay_wakeup = Arc::new(Notify::new());
        let read_through = ReadThrough::new(
            Arc::clone(&cache),
            config.cache.cache_prefix.clone(),
            config.cache.cache_user_ttl,
            config.cache.cache_event_ttl,
        );
        let service = Service::new(Arc::clone(&store), read_through, Arc::clone(&relay_wakeup));
        let health = Health {
            store: Arc::clone(&store),
            cache: Arc::clone(&cache),
            bus: Arc::clone(&publisher),
            check_timeout: HEALTH_CHECK_TIMEOUT,
            shutting_down: AtomicBool::new(false),
        };
        let state = AppState {
            service: Arc::new(service),
            health: Arc::new(health),
            body_limit: config.server.http_body_limit,
            in_flight: Arc::new(AtomicUsize::new(0)),
        };

        let address = (
            config.server.server_host.as_str(),
            config.server.server_port,
        );
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!(
                "failed to listen on {}:{} (SERVER_HOST, SERVER_PORT)",
                address.0, address.1
            )
        })?;
        let port = listener.local_addr()?.port();
        tracing::info!(
            address = %listener.local_addr()?,
            store = store.backend(),
            cache = cache.backend(),
            bus = publisher.backend(),
            startup_ms = started.elapsed().as_millis() as u64,
            "highload ready"
        );
        Ok(Self {
            config,
            listener,
            port,
            state,
            store,
            publisher,
            subscriber,
            relay_wakeup,
            shutdown: CancellationToken::new(),
        })
    }

    /// The port the listener is bound to (useful with `SERVER_PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// How many HTTP requests are being handled right now.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.state.in_flight)
    }

    /// Serves until the shutdown token is cancelled (or a task fails), then
    /// drains in order. Errors if a task failed or draining overran
    /// `SHUTDOWN_TIMEOUT`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            config,
            listener,
            state,
            store,
            publisher,
            subscriber,
            relay_wakeup,
            shutdown,
            ..
        } = self;
        // Cancelled by a task that ends before shutdown was asked for.
        let failed = CancellationToken::new();

        let limits = HttpLimits {
            body_limit: config.server.http_body_limit,
            request_timeout: config.server.http_request_timeout,
            max_in_flight: config.server.http_max_in_flight as usize,
        };
        let app = http::app(state.clone(), limits);
        let mut server = Stage::spawn("http server", &failed, |token| async move {
            axum::serve(
                listener,
                axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
            )
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .context("http server failed")
        });

        let mut relay = config.bus.outbox_relay_enabled.then(|| {
            let relay = OutboxRelay {
                store: Arc::clone(&store),
                publisher: Arc::clone(&publisher),
                batch_size: config.bus.outbox_batch_size,
                poll_interval: config.bus.outbox_poll_interval,
                wakeup: relay_wakeup,
            };
            Stage::spawn("outbox relay", &failed, |token| {
                relay.run_until_stopped(token)
            })
        });

        let processor = Arc::new(EventProcessor {
            store: Arc::clone(&store),
            dead_letters: Arc::clone(&publisher),
            max_attempts: config.workers.processing_max_attempts,
            retry_delay: config.workers.processing_retry_delay,
        });
        let pool = WorkerPool::start(
            config.workers.worker_count as usize,
            config.workers.worker_queue_capacity as usize,
            processor,
        );
        let mut consumer = Stage::spawn("consumer", &failed, |token| {
            worker::run_consumer_until_stopped(subscriber, pool, token)
        });

        tokio::select! {
            () = shutdown.cancelled() => {}
            () = failed.cancelled() => tracing::error!("a background task stopped; shutting down"),
        }
        state.health.begin_shutdown();
        let deadline = config.server.shutdown_timeout;
        let started = Instant::now();
        let drain = async {
            let mut results = vec![server.stop().await];
            state.service.finish_writes().await;
            if let Some(relay) = relay.as_mut() {
                results.push(relay.stop().await);
            }
            results.push(consumer.stop().await);
            publisher
                .flush(deadline.saturating_sub(started.elapsed()))
                .await;
            store.close().await;
            results
        };
        let results = tokio::time::timeout(deadline, drain).await.map_err(|_| {
            anyhow::anyhow!("shutdown did not finish within {deadline:?} (SHUTDOWN_TIMEOUT)")
        })?;
        for result in &results {
            if let Err(err) = result {
                tracing::error!(error = format!("{err:#}"), "task failed");
            }
        }
        if failed.is_cancelled() {
            anyhow::bail!("stopped because a background task ended unexpectedly");
        }
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        tracing::info!(
            drain_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
        Ok(())
    }
}

async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let database = &config.database;
    match database.backend().map_err(anyhow::Error::msg)? {
        DatabaseBackend::Sqlite(path) => Ok(Arc::new(
            SqliteStore::open(
                &path,
                database.db_max_connections,
                database.db_acquire_timeout,
            )
            .await?,
        )),
        DatabaseBackend::Postgres(_) => {
            anyhow::bail!("PostgreSQL is not supported by this build yet (DATABASE_URL, DB_HOST)")
        }
    }
}

fn build_cache(config: &Config) -> anyhow::Result<Arc<dyn Cache>> {
    if config.cache.redis_url.is_some() || config.cache.redis_host.is_some() {
        anyhow::bail!("Redis is not supported by this build yet (REDIS_URL, REDIS_HOST)");
    }
    Ok(Arc::new(MemoryCache::new(
        config.cache.cache_memory_capacity,
    )))
}

fn build_bus(config: &Config) -> anyhow::Result<(Arc<dyn Publisher>, Box<dyn Subscriber>)> {
    if config.bus.kafka_brokers.is_some() {
        anyhow::bail!("Kafka is not supported by this build yet (KAFKA_BROKERS)");
    }
    let (publisher, subscriber) =
        bus::memory::channel(config.workers.worker_queue_capacity as usize);
    Ok((Arc::new(publisher), Box::new(subscriber)))
}

/// A background task with its own stop token.
struct Stage {
    name: &'static str,
    token: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Stage {
    /// Spawns `run(token)`; if it ends before `stop` is called, `failed` is
    /// cancelled.
    fn spawn<F, Fut>(name: &'static str, failed: &CancellationToken, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = CancellationToken::new();
        let task = run(token.clone());
        let (stop, failed) = (token.clone(), failed.clone());
        let handle = tokio::spawn(async move {
            let result = task.await;
            if !stop.is_cancelled() {
                match &result {
                    Ok(()) => tracing::error!(task = name, "task ended unexpectedly"),
                    Err(err) => {
                        tracing::error!(task = name, error = format!("{err:#}"), "task failed")
                    }
                }
                failed.cancel();
            }
            result
        });
        Self {
            name,
            token,
            handle,
        }
    }

    /// Asks the task to stop and waits for it.
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.token.cancel();
        (&mut self.handle)
            .await
            .with_context(|| format!("{} panicked", self.name))?
    }
}
