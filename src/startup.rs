//! The application: builds the backends, binds the listener, runs the HTTP
//! server and the background tasks, and drains them in order on shutdown.
//!
//! Shutdown order, all under `SHUTDOWN_TIMEOUT`:
//! 1. readiness answers 503, so load balancers stop sending requests;
//! 2. the HTTP server stops accepting, closes the connections that wait for
//!    a request, finishes in-flight requests, and writes started by them
//!    complete; the background health checks stop;
//! 3. the pipeline stops: the outbox relay publishes what is left in the
//!    outbox (as long as the bus accepts it), then the consumer stops
//!    fetching, the worker pool finishes its queue, and the final offsets
//!    are committed (see `pipeline`);
//! 4. the producer flushes, the store's pool closes;
//! 5. the span exporter sends the spans still buffered (when spans are
//!    exported).
//!
//! Every background task runs under one supervisor (`supervisor.rs`). One
//! that stops on its own before shutdown is a failure: the rest is drained
//! the same way and the process exits non-zero. When the time runs out,
//! whatever is still running is cancelled at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::auth::accounts::Accounts;
use crate::auth::api_key::KeyStore;
use crate::bus::kafka::KafkaSettings;
use crate::bus::{self, Publisher, Subscriber};
use crate::cache::{self, InvalidationListener};
use crate::config::Config;
use crate::edge::Guards;
use crate::edge::server::{self, Listener};
use crate::edge::unsent::WriteBuffer;
use crate::health::{Health, HealthSettings, Readiness};
use crate::http::{self, AppParts, AppState, HttpLimits};
use crate::metrics::{Metrics, StoreCollector};
use crate::pipeline::{EventProcessor, OutboxRelay, Pipeline};
use crate::service::Service;
use crate::store::{self, AccountTable, ApiKeyTable, GroupCommit, GroupCommitSettings, Store};
use crate::supervisor::Supervisor;
use crate::telemetry::Tracing;

/// Time limit of each health check.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Application {
    config: Config,
    listener: Listener,
    port: u16,
    state: AppState,
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    pipeline: Pipeline,
    /// Keeps the in-process cache tier coherent with other replicas.
    invalidations: Option<InvalidationListener>,
    /// Cancelled to begin a graceful shutdown.
    shutdown: CancellationToken,
    /// The span exporter, flushed last in the drain.
    spans: Tracing,
}

impl Application {
    /// Creates the backends and binds the listener. Configured servers
    /// (PostgreSQL, Redis, Kafka) are connected lazily: one that is down
    /// does not stop start-up, it is retried and reported by the health
    /// endpoints. Nothing is served until [`Application::run_until_stopped`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        if !config.ignored.is_empty() {
            let named: Vec<String> = config
                .ignored
                .iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            tracing::warn!(
                settings = %named.join("; "),
                "settings of the Go service with no counterpart here are ignored"
            );
        }
        crate::tls::install_crypto_provider();
        let mut metrics = Metrics::new();
        let caches = cache::build(&config.cache, &mut metrics)?;
        let metrics = Arc::new(metrics);
        let (store, api_keys, account_table) = build_store(&config, &metrics).await?;
        let cache = Arc::clone(&caches.shared);
        let (publisher, subscriber) = build_bus(&config, &metrics)?;

        let relay_wakeup = Arc::new(Notify::new());
        let read_through = caches.read_through(&config.cache, Arc::clone(&metrics));
        let service = Service::new(
            Arc::clone(&store),
            read_through,
            Arc::clone(&relay_wakeup),
            config
                .server
                .cursor_secret
                .as_ref()
                .map(|secret| secrecy::ExposeSecret::expose_secret(secret).as_bytes()),
        )
        .with_events_retention(config.database.events_retention);
        let readiness = Arc::new(Readiness::default());
        let health = Health::new(
            Arc::clone(&readiness),
            Arc::clone(&store),
            Arc::clone(&cache),
            Arc::clone(&publisher),
            subscriber.probe(),
            HealthSettings {
                check_timeout: HEALTH_CHECK_TIMEOUT,
                interval: config.server.health_check_interval,
                detail: config.server.health_detail,
            },
            Arc::clone(&metrics),
        );
        let auth = Arc::new(Authenticator::build(
            &config.auth,
            KeyStore::new(Arc::clone(&api_keys)),
        )?);
        let state = AppState::new(AppParts {
            service: Arc::new(service),
            health: Arc::new(health),
            body_limit: config.server.http_body_limit,
            metrics: Arc::clone(&metrics),
            store_metrics: Arc::new(StoreCollector::new(Arc::clone(&store))),
            guards: Arc::new(Guards::new(
                &config.guard,
                Arc::clone(&store),
                &auth.verified(),
                config
                    .database
                    .read_replica
                    .as_ref()
                    .map(|replica| replica.max_lag),
            )),
            auth,
            accounts: match &config.auth.accounts {
                Some(settings) => Some(Arc::new(Accounts::new(account_table, settings.clone())?)),
                None => None,
            },
            keys: KeyStore::new(api_keys),
            profiling: config.server.profiling,
            write_buffer: WriteBuffer::new(
                config.server.http_write_buffer_limit,
                config.server.admission.admission_queue_timeout,
            ),
        });
        let relay = config.bus.outbox_relay_enabled.then(|| OutboxRelay {
            store: Arc::clone(&store),
            publisher: Arc::clone(&publisher),
            batch_size: config.bus.outbox_batch_size,
            poll_interval: config.bus.outbox_poll_interval,
            wakeup: relay_wakeup,
            metrics: Arc::clone(&metrics),
        });
        let pipeline = Pipeline {
            store: Arc::clone(&store),
            publisher: Arc::clone(&publisher),
            subscriber,
            relay,
            processed_kept_for: config.workers.processed_messages_retention,
            events_retention: config.database.events_retention,
            processor: EventProcessor {
                store: Arc::clone(&store),
                dead_letters: Arc::clone(&publisher),
                max_attempts: config.workers.processing_max_attempts,
                retry_delay: config.workers.processing_retry_delay,
                metrics: Arc::clone(&metrics),
            },
            workers: config.workers.worker_count as usize,
            queue_capacity: config.workers.worker_queue_capacity as usize,
            metrics: Arc::clone(&metrics),
            readiness,
        };

        let address = (
            config.server.server_host.as_str(),
            config.server.server_port,
        );
        let listener = server::bind(address.0, address.1).await.with_context(|| {
            format!(
                "failed to listen on {}:{} (SERVER_HOST, SERVER_PORT)",
                address.0, address.1
            )
        })?;
        let listener = Listener::new(listener, &config.listener)?;
        let port = listener.local_addr()?.port();
        tracing::info!(
            address = %listener.local_addr()?,
            tls = listener.is_tls(),
            max_connections = listener.max_connections(),
            store = store.backend(),
            cache = cache.backend(),
            bus = publisher.backend(),
            startup_ms = started.elapsed().as_millis() as u64,
            "highload listening"
        );
        Ok(Self {
            config,
            listener,
            port,
            state,
            store,
            publisher,
            pipeline,
            invalidations: caches.listener,
            shutdown: CancellationToken::new(),
            spans: Tracing::default(),
        })
    }

    /// Hands the process's span exporter to this application, which sends
    /// the last spans at the end of its drain.
    pub fn with_tracing(mut self, spans: Tracing) -> Self {
        self.spans = spans;
        self
    }

    /// The port the listener is bound to (useful with `SERVER_PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The metrics of this instance (as `GET /metrics` renders them).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
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
            pipeline,
            invalidations,
            shutdown,
            spans,
            ..
        } = self;
        let supervisor = Supervisor::new();

        let limits = HttpLimits {
            body_limit: config.server.http_body_limit,
            body_read_timeout: config.server.http_body_read_timeout,
            request_timeout: config.server.http_request_timeout,
            max_in_flight: config.server.http_max_in_flight as usize,
            admission: config.server.admission,
        };
        let app = http::app(state.clone(), limits);
        let server = supervisor.spawn("http server", |token| {
            listener.run_until_stopped(app, token)
        });
        let health = Arc::clone(&state.health);
        let health = supervisor.spawn("health checks", |token| async move {
            health.run_until_stopped(token).await
        });
        let guards = Arc::clone(&state.guards);
        let purge = supervisor.spawn("idempotency key purge", |token| {
            guards.run_purge_until_stopped(token)
        });
        let pipeline = supervisor.spawn("pipeline", |token| {
            pipeline.run_until_stopped(supervisor.clone(), token)
        });
        let invalidations = invalidations.map(|listener| {
            supervisor.spawn("cache invalidations", |token| {
                listener.run_until_stopped(token)
            })
        });

        tokio::select! {
            () = shutdown.cancelled() => {}
            () = supervisor.failed() => tracing::error!("a background task stopped; shutting down"),
        }
        state.health.readiness().begin_shutdown();
        let deadline = config.server.shutdown_timeout;
        let started = Instant::now();
        let drain = async {
            let server = server.stop().await;
            // Nothing reports the checks any more.
            let health = health.stop().await;
            let purge = purge.stop().await;
            state.service.finish_writes().await;
            let pipeline = pipeline.stop().await;
            let invalidations = match invalidations {
                Some(task) => task.stop().await,
                None => Ok(()),
            };
            // Nothing publishes or queries any more past this point.
            supervisor.wait().await;
            publisher
                .flush(deadline.saturating_sub(started.elapsed()))
                .await;
            store.close().await;
            spans
                .shutdown(deadline.saturating_sub(started.elapsed()))
                .await;
            [server, health, purge, pipeline, invalidations]
        };
        let Ok(results) = tokio::time::timeout(deadline, drain).await else {
            supervisor.stop_all();
            anyhow::bail!("shutdown did not finish within {deadline:?} (SHUTDOWN_TIMEOUT)");
        };
        if supervisor.has_failed() {
            anyhow::bail!("stopped because a background task ended unexpectedly");
        }
        for result in results {
            result?;
        }
        tracing::info!(
            drain_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
        Ok(())
    }
}

/// The store, with group commit in front of it, and its `api_keys` and
/// account tables (on the same pools).
async fn build_store(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn ApiKeyTable>, Arc<dyn AccountTable>)> {
    let database = &config.database;
    let opened = store::open(database, database.max_connections).await?;
    let settings = GroupCommitSettings {
        max_batch: database.write_batch_max as usize,
        window: database.write_batch_window,
        committers: opened.committers,
    };
    let store = GroupCommit::new(opened.store, settings, Arc::<Metrics>::clone(metrics));
    Ok((Arc::new(store), opened.api_keys, opened.accounts))
}

fn build_bus(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<dyn Publisher>, Box<dyn Subscriber>)> {
    let Some(kafka) = &config.bus.kafka else {
        let (publisher, subscriber) =
            bus::memory::channel(config.workers.worker_queue_capacity as usize);
        return Ok((Arc::new(publisher), Box::new(subscriber)));
    };
    let (publisher, subscriber) = bus::kafka::connect(KafkaSettings {
        kafka: kafka.clone(),
        check_timeout: HEALTH_CHECK_TIMEOUT,
        metrics: Arc::clone(metrics),
    })?;
    Ok((Arc::new(publisher), Box::new(subscriber)))
}

/// The OpenAPI document the server serves at `/openapi.json`
/// (`highload openapi` prints it; `api/openapi.json` is its committed copy).
pub fn openapi_document() -> &'static str {
    crate::http::openapi::document()
}
