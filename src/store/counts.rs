//! List totals kept as rows change (the `row_counts` table): which row
//! counts what, and the changes a transaction makes to them, gathered until
//! it commits.

use std::collections::BTreeMap;

use uuid::Uuid;

/// The key of a row of `row_counts` (see its migration): what it counts.
pub(super) type CountKey = (&'static str, Uuid, String);

/// The key counting every user.
pub(super) fn users_total() -> CountKey {
    ("users", Uuid::nil(), String::new())
}

/// The key counting the events `filter` lists.
pub(super) fn events_total(user_id: Option<Uuid>, event_type: Option<&str>) -> CountKey {
    (
        "events",
        user_id.unwrap_or_default(),
        event_type.unwrap_or_default().to_owned(),
    )
}

/// Changes to `row_counts` made by the writes of a transaction, applied
/// once, just before it commits: one statement per batch, and the rows
/// (which every transaction updates) locked only for that moment, always in
/// the same order, so that concurrent batches cannot deadlock on them.
#[derive(Debug, Default)]
pub(super) struct Counts(pub(super) BTreeMap<CountKey, i64>);

impl Counts {
    pub(super) fn add(&mut self, key: CountKey, delta: i64) {
        *self.0.entry(key).or_default() += delta;
    }

    /// One more event of `user_id` and `event_type`, in each total.
    pub(super) fn add_event(&mut self, user_id: Uuid, event_type: &str, delta: i64) {
        for user in [None, Some(user_id)] {
            for kind in [None, Some(event_type)] {
                self.add(events_total(user, kind), delta);
            }
        }
    }

    /// Takes the not yet applied changes to `user_id`'s own event totals.
    pub(super) fn take_user(&mut self, user_id: Uuid) -> Vec<(String, i64)> {
        let keys: Vec<CountKey> = self
            .0
            .keys()
            .filter(|(scope, user, _)| *scope == "events" && *user == user_id)
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|key| self.0.remove(&key).map(|n| (key.2, n)))
            .collect()
    }
}
