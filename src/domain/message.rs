//! The message every change publishes on the bus.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Event, User};
use crate::telemetry::trace_context::TraceContext;

/// The JSON value of a bus message, field for field what the Go service
/// sends: `{id, user_id, type, data, timestamp}`. `id` is the event id for
/// posted events and a fresh id for user lifecycle events; consumers dedupe
/// on it. Beside the value travels the trace of the change it announces
/// (stored with the outbox row, sent as headers), never in the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventMessage {
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: String,
    pub timestamp: DateTime<Utc>,
    /// The trace of the change; `None` outside a trace.
    #[serde(skip)]
    pub trace: Option<TraceContext>,
}

/// The `data` of `user_created` and `user_updated`: the user's fields, as a
/// JSON document inside the string.
#[derive(Serialize)]
struct UserSnapshot<'a> {
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
}

impl EventMessage {
    pub(crate) const USER_CREATED: &'static str = "user_created";
    pub(crate) const USER_UPDATED: &'static str = "user_updated";
    pub(crate) const USER_DELETED: &'static str = "user_deleted";

    /// The message announcing a posted event; it carries the event's id.
    pub(crate) fn for_event(event: &Event) -> Self {
        Self {
            id: event.id,
            user_id: event.user_id,
            event_type: event.event_type.clone(),
            data: event.data.clone(),
            timestamp: event.created_at,
            trace: None,
        }
    }

    /// `user_created` or `user_updated` for this state of the user.
    pub(crate) fn for_user(kind: &'static str, user: &User, at: DateTime<Utc>) -> Self {
        let snapshot = UserSnapshot {
            email: &user.email,
            first_name: &user.first_name,
            last_name: &user.last_name,
        };
        Self {
            id: Uuid::now_v7(),
            user_id: user.id,
            event_type: kind.to_owned(),
            data: serde_json::to_string(&snapshot).expect("BUG: a struct of strings serializes"),
            timestamp: at,
            trace: None,
        }
    }

    /// `user_deleted` for this user.
    pub(crate) fn user_deleted(user_id: Uuid, at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::now_v7(),
            user_id,
            event_type: Self::USER_DELETED.to_owned(),
            data: "{}".to_owned(),
            timestamp: at,
            trace: None,
        }
    }

    /// The same message, in the trace `trace`.
    pub(crate) fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// The bus key: the user id, so that one user's messages stay in order.
    pub(crate) fn key(&self) -> String {
        self.user_id.to_string()
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("BUG: an EventMessage serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_snapshot_is_json_even_with_quotes_in_names() {
        let at = crate::domain::now();
        let user = User {
            id: Uuid::now_v7(),
            email: "a\"b@example.com".into(),
            first_name: "O\"Brien".into(),
            last_name: "x\\y".into(),
            created_at: at,
            updated_at: at,
        };
        let msg = EventMessage::for_user(EventMessage::USER_CREATED, &user, at);
        let data: serde_json::Value = serde_json::from_str(&msg.data).unwrap();
        assert_eq!(data["first_name"], "O\"Brien");
        assert_eq!(data["last_name"], "x\\y");
        let value: serde_json::Value = serde_json::from_str(&msg.to_json()).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["data", "id", "timestamp", "type", "user_id"]);
    }
}
