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

/// Two settings that only go together (a certificate and its key): both,
/// or neither; one alone is refused, naming the one missing.
pub(super) fn both_or_neither<A, B>(
    (first, a): (&'static str, Option<A>),
    (second, b): (&'static str, Option<B>),
) -> Result<Option<(A, B)>, ConfigError> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Invalid {
            variable: second,
            reason: format!("must be set with {first}"),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            variable: first,
            reason: format!("must be set with {second}"),
        }),
    }
}
