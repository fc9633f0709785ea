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
mod cli;
mod data;
mod http;
mod stack;
mod wait;

pub(crate) use app::{TestApp, spawn_app, spawn_app_with, test_config};
pub(crate) use backends::{WriteLock, fetch_text, replay_messages};
pub(crate) use cli::{field, run_cli, stdout_of};
pub(crate) use data::TestData;
pub(crate) use http::assert_problem;
pub(crate) use stack::{RealStack, Stack};
pub(crate) use wait::{eventually, eventually_within, free_port};
