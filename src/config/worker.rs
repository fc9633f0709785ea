//! The worker pool's settings (`WORKER_*`, `PROCESSING_*`): how many
//! workers process consumed events, and how they retry.

use std::time::Duration;

use clap::Args;

use crate::config::parse::parse_duration;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Workers")]
pub struct WorkerConfig {
    /// Workers processing consumed events in parallel
    #[arg(long, env = "WORKER_COUNT", value_name = "WORKER_COUNT", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_count: u32,

    /// Events queued for the workers; when full, consumption pauses
    #[arg(long, env = "WORKER_QUEUE_CAPACITY", value_name = "WORKER_QUEUE_CAPACITY", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub worker_queue_capacity: u32,

    /// Attempts at processing an event before it goes to the dead-letter topic
    #[arg(long, env = "PROCESSING_MAX_ATTEMPTS", value_name = "PROCESSING_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub processing_max_attempts: u32,

    /// Pause before the second attempt; it doubles with each further one
    #[arg(long, env = "PROCESSING_RETRY_DELAY", value_name = "PROCESSING_RETRY_DELAY", default_value = "200ms", value_parser = parse_duration)]
    pub processing_retry_delay: Duration,
}
