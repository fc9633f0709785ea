//! What the API tests share, one concern per file:
//! - `stack`: the two stacks, the macros that run a suite on each, and the
//!   real stack's services (a real-stack test that cannot reach them fails);
//! - `data`: a test's own data (SQLite file, or PostgreSQL database, cache
//!   prefix and topic), dropped with it;
//! - `app`: `spawn_app`, the real `Application` on port 0;
//! - `http`: requests to the app and assertions on its answers;
//! - `backends`: reaching the app's database and bus behind its back;
//! - `wait`: polling with a deadline, free ports.

mod app;
mod backends;
mod data;
mod http;
mod stack;
mod wait;

pub use app::{TestApp, spawn_app, spawn_app_with, test_config};
pub use backends::{WriteLock, replay_messages};
pub use data::TestData;
pub use http::assert_problem;
pub use stack::{RealStack, Stack};
pub use wait::{eventually, free_port};
