//! Events: what a client posts about a user, and the stored record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValidationError;

/// Longest event type.
const TYPE_MAX_CHARS: usize = 100;
/// Largest `data` payload in bytes (UTF-8).
pub(super) const DATA_MAX_BYTES: usize = 64 * 1024;

/// A stored event, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Event {
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(rename = "type")]
    #[schema(example = "login")]
    pub event_type: String,
    /// Free-form, as the client sent it.
    pub data: String,
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// The most memory a stored event takes (its data and type at their
    /// longest).
    pub(crate) const MAX_HELD_BYTES: usize =
        std::mem::size_of::<Self>() + DATA_MAX_BYTES + TYPE_MAX_CHARS;

    /// The memory this event takes.
    pub(crate) fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.data.len() + self.event_type.len()
    }
}

/// An event type: 1 to 100 characters of `[A-Za-z0-9_.:-]`, so that it is
/// safe as a metric label, a log field and a map key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventType(String);

impl EventType {
    pub(crate) fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if raw.chars().count() > TYPE_MAX_CHARS {
            return Err(ValidationError::new(
                field,
                "must be at most 100 characters",
            ));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        {
            return Err(ValidationError::new(
                field,
                "may contain only letters, digits and _ . : -",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The free-form `data` string of an event: at most 64 KiB, any characters
/// but NUL (U+0000), which PostgreSQL cannot store in text and which the
/// embedded stack refuses too, so that both answer the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventData(String);

impl EventData {
    pub(crate) fn parse(field: &'static str, raw: String) -> Result<Self, ValidationError> {
        if raw.len() > DATA_MAX_BYTES {
            return Err(ValidationError::new(
                field,
                format!("must be at most {DATA_MAX_BYTES} bytes"),
            ));
        }
        if raw.contains('\0') {
            return Err(ValidationError::new(
                field,
                "must not contain the NUL character (U+0000)",
            ));
        }
        Ok(Self(raw))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `POST /api/v1/events` creates.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub user_id: Uuid,
    pub event_type: EventType,
    pub data: EventData,
}

/// Narrows `GET /api/v1/events`.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventFilter {
    pub user_id: Option<Uuid>,
    pub event_type: Option<EventType>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_allow_a_safe_alphabet_only() {
        assert!(EventType::parse("type", "page_view").is_ok());
        assert!(EventType::parse("type", "billing.invoice:paid-v2").is_ok());
        assert!(EventType::parse("type", &"a".repeat(100)).is_ok());
        assert!(EventType::parse("type", &"a".repeat(101)).is_err());
        assert!(EventType::parse("type", "").is_err());
        assert!(EventType::parse("type", "has space").is_err());
        assert!(EventType::parse("type", "naïve").is_err());
    }

    #[test]
    fn data_is_limited_to_64_kib() {
        assert!(EventData::parse("data", String::new()).is_ok());
        assert!(EventData::parse("data", "x".repeat(DATA_MAX_BYTES)).is_ok());
        assert!(EventData::parse("data", "x".repeat(DATA_MAX_BYTES + 1)).is_err());
    }

    #[test]
    fn data_refuses_nul_and_nothing_else_printable_or_not() {
        let err = EventData::parse("data", "a\u{0}b".into()).unwrap_err();
        assert_eq!(err.field, "data");
        assert!(EventData::parse("data", "\u{1}\u{200B}\u{FEFF}\n\"{}\"".into()).is_ok());
        assert!(EventType::parse("type", "a\u{0}b").is_err());
    }
}
