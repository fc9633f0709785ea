//! API tests: every request goes over real HTTP to the real `Application`.

mod helpers;
mod kafka;

mod events;
mod health;
mod lifecycle;
mod observability;
mod openapi;
mod pipeline;
mod process;
mod real_stack;
mod services;
mod users;
mod validation;
