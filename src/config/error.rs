//! The error of a value that parsed but cannot be used. A leaf: every
//! settings file returns it, and it imports none of them.

use std::time::Duration;

/// A value that parsed but cannot be used; each names its variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL whose scheme selects no backend.
    #[error("{variable} must start with {expected}")]
    Scheme {
        variable: &'static str,
        expected: &'static str,
    },
    /// A value the backend's client refuses. The reason never quotes the
    /// value, which may hold a password.
    #[error("{variable} is invalid: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
    #[error("{variable} must be at least {}", humantime::format_duration(*.minimum))]
    TooShort {
        variable: &'static str,
        minimum: Duration,
    },
    /// A value that does not fit with another setting.
    #[error("{variable}: {reason}")]
    Conflict {
        variable: &'static str,
        reason: String,
    },
}

impl ConfigError {
    /// The environment variable at fault.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::Scheme { variable, .. }
            | Self::Invalid { variable, .. }
            | Self::TooShort { variable, .. }
            | Self::Conflict { variable, .. } => variable,
        }
    }
}
