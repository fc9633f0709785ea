//! API tests: every request goes over real HTTP to the real `Application`.

mod helpers;
mod kafka;

mod connections;
mod docs_browser;
mod edge;
mod events;
mod group_commit;
mod health;
mod https;
mod lifecycle;
mod observability;
mod openapi;
mod pipeline;
mod process;
mod real_stack;
mod services;
mod totals;
mod users;
mod validation;
