//! Domain types: valid by construction.
//!
//! Request bodies are parsed into these types at the HTTP edge; everything
//! behind the edge (service, store, bus) can rely on their invariants
//! instead of re-checking them.

mod activity;
mod event;
mod message;
mod page;
mod text;
mod user;

pub(crate) use activity::Activity;
pub(crate) use event::{Event, EventData, EventFilter, EventType, NewEvent};
pub(crate) use message::EventMessage;
pub(crate) use page::{CursorKey, Key, Page, PageOf};
pub(crate) use text::name_pattern;
pub(crate) use user::{Email, NewUser, PersonName, User, UserPatch};

use chrono::{DateTime, SubsecRound, Utc};

/// Why a value was rejected, naming the field so that a client can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub(crate) struct ValidationError {
    /// The JSON field or query parameter that holds the bad value.
    pub field: &'static str,
    /// What is wrong with it, phrased for the client.
    pub reason: String,
}

impl ValidationError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// The current time at the precision every store keeps (microseconds), so
/// that a value returned at creation equals the value read back later.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
