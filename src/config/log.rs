//! The logging settings (`LOG_LEVEL`, `LOG_FORMAT`). A leaf: it imports
//! nothing of the crate, so that `telemetry` may take them without a
//! circle.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Pretty,
    /// One JSON object per line
    Json,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogConfig {
    /// Level (error, warn, info, debug, trace) or a tracing filter such as "info,highload=debug"
    #[arg(long, env = "LOG_LEVEL", value_name = "LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log line format
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// Accepts Go's level names (`warning`, `fatal`) besides tracing filters.
fn parse_log_level(raw: &str) -> Result<String, String> {
    let filter = match raw.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "fatal" | "panic" => "error".to_owned(),
        _ => raw.trim().to_owned(),
    };
    tracing_subscriber::EnvFilter::try_new(&filter)
        .map(|_| filter)
        .map_err(|err| format!("{err} (expected error, warn, info, debug or trace)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_like_their_docs_say() {
        assert_eq!(parse_log_level("warning").unwrap(), "warn");
        assert_eq!(
            parse_log_level("info,highload=debug").unwrap(),
            "info,highload=debug"
        );
    }
}
