//! API tests: every request goes over real HTTP to the real `Application`.

mod helpers;
mod kafka;

mod events;
mod health;
mod lifecycle;
mod pipeline;
mod process;
mod real_stack;
mod services;
mod users;
