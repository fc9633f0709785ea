//! API tests: every request goes over real HTTP to the real `Application`.

mod helpers;
mod kafka;

mod accounts;
mod api_keys_cli;
mod auth;
mod cache_tiers;
mod connections;
mod cursor;
mod docs_browser;
mod edge;
mod events;
mod go_settings;
mod group_commit;
mod headers;
mod health;
mod https;
mod idempotency;
mod lifecycle;
mod observability;
mod openapi;
mod outbox_lease;
mod overload;
mod pipeline;
mod process;
mod profiling;
mod rate_limit;
mod real_stack;
mod retention;
mod services;
mod tls;
mod totals;
mod tracing;
mod user_deletion;
mod users;
mod validation;
