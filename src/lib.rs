//! highload: a users-and-events REST service built for load.
//!
//! A guided tour, from the edge inwards:

/// The Bus port: in-process or Kafka, and the outbox relay.
pub mod bus;
/// The Cache port: in-process or Redis, read-through with single-flight.
pub mod cache;
/// Typed configuration from environment variables, `.env` and flags.
pub mod config;
/// Valid-by-construction users, events, pages and bus messages.
pub mod domain;
/// Readiness of this instance and the probes of its dependencies.
pub mod health;
/// Routes, middleware and the error responses of the HTTP API.
pub mod http;
/// Prometheus metrics of the whole service.
pub mod metrics;
/// Readiness of store and bus, then the outbox relay and the consumer.
pub mod pipeline;
/// Exponential backoff with jitter that stops waiting at shutdown.
pub mod retry;
/// The API's operations over the ports below.
pub mod service;
/// SIGTERM / Ctrl-C → cancellation token.
pub mod shutdown;
/// Builds the backends, serves HTTP, runs the background tasks, drains.
pub mod startup;
/// The Store port: SQLite or PostgreSQL, with the transactional outbox.
pub mod store;
/// Runs the background tasks and stops the process when one fails.
pub mod supervisor;
/// Logging setup (`LOG_LEVEL`, `LOG_FORMAT`).
pub mod telemetry;
/// The bounded worker pool and the event processor.
pub mod worker;
