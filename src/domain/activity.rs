//! What the event processor derives for a user.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The result of `GET /api/v1/users/{id}/activity`: every bus message the
/// processor applied for this user, each counted once however often it was
/// delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Activity {
    pub user_id: Uuid,
    /// Messages processed, lifecycle ones (`user_created`, …) included.
    pub total_events: u64,
    /// The same, per event type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Timestamp of the latest processed message; `null` before the first.
    pub last_event_at: Option<DateTime<Utc>>,
}
