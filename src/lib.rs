//! highload: a users-and-events REST service built for load.
//!
//! A guided tour, from the bottom layer up; each layer imports only those
//! below it and the shared rooms (docs/architecture.md draws the map and
//! names the one import that points up; `scripts/check-imports.py` fails
//! on a cycle between files or another import up the layers). `pub` means
//! exported: only what the binary and the API tests use (configuration,
//! logging, the signal handler, the application, its metrics, the key
//! store of `highload api-key`); the `unreachable_pub` lint keeps
//! everything else crate-internal.
//!
//! | layer | rooms |
//! |---|---|
//! | domain | `domain` |
//! | ports and adapters | `store`, `cache`, `bus` |
//! | use cases | `service`, `pipeline`, `health`, `auth` |
//! | API and the guards in front of it | `http`, `edge` |
//! | the process | `startup`, `shutdown`, `healthcheck` |
//! | shared by all | `config`, `metrics`, `telemetry`, `retry`, `supervisor`, `tls` |

// --- domain
/// Valid-by-construction users, events, pages and bus messages.
pub(crate) mod domain;

// --- ports and their adapters
/// The Bus port: in-process or Kafka; imports no store.
pub(crate) mod bus;
/// The Cache port: in-process or Redis, read-through with single-flight.
pub(crate) mod cache;
/// The Store port: SQLite or PostgreSQL over one `SqlStore<Dialect>`, with
/// the transactional outbox, group commit and the API key table.
pub(crate) mod store;

// --- use cases
/// Authentication (`AUTH_MODE`): API keys, JWTs, scopes; answers in its
/// own terms, which the edge turns into HTTP.
pub mod auth;
/// Readiness of this instance and the probes of its dependencies.
pub(crate) mod health;
/// The asynchronous wing: the outbox relay, the worker pool and the event
/// processor, started once store and bus are ready and stopped in order.
pub(crate) mod pipeline;
/// The API's operations over the ports below.
pub(crate) mod service;

// --- the API and its guards
/// The guards in front of the API: connection server and TLS listener,
/// admission, authentication, rate limit, idempotency keys, headers.
pub(crate) mod edge;
/// The API: routes, handlers, extractors, errors, the OpenAPI document,
/// and `app`, which puts the guards around the routes in order.
pub(crate) mod http;

// --- the process
/// `highload healthcheck`: the image's health check, by the binary itself.
pub mod healthcheck;
/// SIGTERM / Ctrl-C → cancellation token.
pub mod shutdown;
/// Builds the backends, serves HTTP, runs the background tasks, drains.
pub mod startup;

// --- shared by every layer
/// Typed configuration from environment variables, `.env` and flags: the
/// loader, and each component's settings in a file of its own.
pub mod config;
/// Prometheus metrics of the whole service.
pub mod metrics;
/// Exponential backoff with jitter that stops waiting at shutdown.
pub(crate) mod retry;
/// Runs the background tasks and stops the process when one fails.
pub(crate) mod supervisor;
/// Logging (`LOG_LEVEL`, `LOG_FORMAT`), span export (`OTEL_*`), and the W3C
/// trace context carried from a request through the outbox and the bus.
pub mod telemetry;
/// TLS to the backends: the crypto provider, certificate files checked.
pub(crate) mod tls;
