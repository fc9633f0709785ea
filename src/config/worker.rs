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

    /// How long the ids of processed messages are kept, to recognize a message delivered again:
    /// auto (as long as the Kafka topic keeps messages, retention.ms + segment.ms, never if forever;
    /// a day on the in-process bus), or a duration
    #[arg(long, env = "PROCESSED_MESSAGES_RETENTION", value_name = "PROCESSED_MESSAGES_RETENTION",
          default_value = "auto", value_parser = parse_kept_for)]
    pub processed_messages_retention: KeptFor,
}

/// `PROCESSED_MESSAGES_RETENTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptFor {
    /// As long as the bus may deliver a message again.
    Auto,
    Duration(Duration),
}

fn parse_kept_for(raw: &str) -> Result<KeptFor, String> {
    if raw.trim().eq_ignore_ascii_case("auto") {
        return Ok(KeptFor::Auto);
    }
    match parse_duration(raw)? {
        d if d < Duration::from_secs(1) => Err(format!(
            "{raw:?} would forget a message before it could arrive again: at least 1s, or auto"
        )),
        d => Ok(KeptFor::Duration(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_auto_or_a_duration_of_a_second_or_more() {
        assert_eq!(parse_kept_for("auto"), Ok(KeptFor::Auto));
        assert_eq!(parse_kept_for(" AUTO "), Ok(KeptFor::Auto));
        assert_eq!(
            parse_kept_for("7d"),
            Ok(KeptFor::Duration(Duration::from_secs(7 * 86400)))
        );
        assert!(parse_kept_for("500ms").is_err());
        assert!(parse_kept_for("forever").is_err());
    }
}
