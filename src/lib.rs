//! highload: a users-and-events REST service built for load.
//!
//! A guided tour, from the edge inwards. Public are only what the binary
//! and the API tests use: configuration, logging, the signal handler, the
//! application and its metrics.

/// Authentication of the API (`AUTH_MODE`): API keys, JWTs, scopes.
pub mod auth;
/// The Bus port: in-process or Kafka.
pub(crate) mod bus;
/// The Cache port: in-process or Redis, read-through with single-flight.
pub(crate) mod cache;
/// Typed configuration from environment variables, `.env` and flags.
pub mod config;
/// Valid-by-construction users, events, pages and bus messages.
pub(crate) mod domain;
/// The guards in front of the API: connection server and TLS listener,
/// admission, authentication, rate limit, idempotency keys, headers.
pub(crate) mod edge;
/// Readiness of this instance and the probes of its dependencies.
pub(crate) mod health;
/// `highload healthcheck`: the image's health check, by the binary itself.
pub mod healthcheck;
/// The API: routes, handlers, extractors, errors, the OpenAPI document.
pub(crate) mod http;
/// Prometheus metrics of the whole service.
pub mod metrics;
/// The asynchronous wing: the outbox relay, the worker pool and the event
/// processor, started once store and bus are ready and stopped in order.
pub(crate) mod pipeline;
/// Exponential backoff with jitter that stops waiting at shutdown.
pub(crate) mod retry;
/// The API's operations over the ports below.
pub(crate) mod service;
/// SIGTERM / Ctrl-C → cancellation token.
pub mod shutdown;
/// Builds the backends, serves HTTP, runs the background tasks, drains.
pub mod startup;
/// The Store port: SQLite or PostgreSQL, with the transactional outbox.
pub(crate) mod store;
/// Runs the background tasks and stops the process when one fails.
pub(crate) mod supervisor;
/// Logging (`LOG_LEVEL`, `LOG_FORMAT`), span export (`OTEL_*`), and the W3C
/// trace context carried from a request through the outbox and the bus.
pub mod telemetry;
/// TLS to the backends: the crypto provider, certificate files checked.
pub(crate) mod tls;
