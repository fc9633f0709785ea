//! Health endpoints.
//!
//! - `/health/live`: the process answers; checks nothing external, so a
//!   slow database never gets the pod restarted.
//! - `/health/ready`: whether to send traffic here: not shutting down and
//!   the database reachable and migrated (without it no request can be
//!   served). The cache and the bus may be down: requests are then served
//!   from the store and messages wait in the outbox.
//! - `/health`: every dependency, each by name with its backend and
//!   latency; 503 `"unhealthy"` when any configured one is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use super::AppState;
use crate::bus::{Probe, Publisher};
use crate::cache::Cache;
use crate::store::Store;

/// What the health endpoints look at.
pub struct Health {
    pub store: Arc<dyn Store>,
    pub cache: Arc<dyn Cache>,
    pub producer: Arc<dyn Publisher>,
    pub consumer: Arc<dyn Probe>,
    /// Each check's time limit: a hung dependency reads as down.
    pub check_timeout: Duration,
    /// Set when shutdown begins, so that readiness fails first and load
    /// balancers stop sending requests before the listener closes.
    pub shutting_down: AtomicBool,
    /// Set once the store's migrations have run; until then the API
    /// answers 503 and readiness fails.
    pub store_ready: AtomicBool,
}

#[derive(Serialize)]
struct Check {
    status: &'static str,
    backend: &'static str,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn healthy(&self) -> bool {
        self.error.is_none()
    }
}

impl Health {
    async fn check<F>(&self, backend: &'static str, probe: F) -> Check
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let started = Instant::now();
        let error = match tokio::time::timeout(self.check_timeout, probe).await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("{err:#}")),
            Err(_) => Some(format!("no answer within {:?}", self.check_timeout)),
        };
        Check {
            status: if error.is_none() {
                "healthy"
            } else {
                "unhealthy"
            },
            backend,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            error,
        }
    }

    /// A ping, but unhealthy until migrations have run.
    async fn check_store(&self) -> Check {
        self.check(self.store.backend(), async {
            self.store.ping().await?;
            anyhow::ensure!(
                self.store_ready.load(Ordering::SeqCst),
                "migrations have not run yet"
            );
            Ok(())
        })
        .await
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn with_status(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}

async fn health(State(state): State<AppState>) -> Response {
    let health = &state.health;
    let bus = health.producer.backend();
    let (database, cache, producer, consumer) = tokio::join!(
        health.check_store(),
        health.check(health.cache.backend(), health.cache.ping()),
        health.check(bus, health.producer.check()),
        health.check(bus, health.consumer.check()),
    );
    let healthy = database.healthy() && cache.healthy() && producer.healthy() && consumer.healthy();
    with_status(
        if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        json!({
            "status": if healthy { "healthy" } else { "unhealthy" },
            "timestamp": unix_now(),
            "checks": {
                "database": database,
                "cache": cache,
                "producer": producer,
                "consumer": consumer,
            },
        }),
    )
}

async fn live() -> Response {
    with_status(
        StatusCode::OK,
        json!({ "status": "alive", "timestamp": unix_now() }),
    )
}

async fn ready(State(state): State<AppState>) -> Response {
    let health = &state.health;
    if health.shutting_down.load(Ordering::SeqCst) {
        return with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "not_ready", "reason": "shutting down", "timestamp": unix_now() }),
        );
    }
    let database = health.check_store().await;
    let ready = database.healthy();
    with_status(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        json!({
            "status": if ready { "ready" } else { "not_ready" },
            "timestamp": unix_now(),
            "checks": { "database": database },
        }),
    )
}
