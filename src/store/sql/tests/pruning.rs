//! Pruning the processed messages' ids (`Store::prune_processed_messages`).

use std::time::Duration;

use uuid::Uuid;

use super::Backend;
use crate::domain::{self, Event, EventMessage};

/// A pruned id no longer stops its message from being applied again; an
/// id recorded after the cut still does.
pub(super) async fn processed_ids_are_forgotten_oldest_first_and_only_before_the_cut<D: Backend>() {
    let db = D::fresh().await;
    let store = db.store();
    let user_id = Uuid::now_v7();
    let message = |n: u32| {
        EventMessage::for_event(&Event {
            id: Uuid::now_v7(),
            user_id,
            event_type: format!("t{n}"),
            data: "{}".into(),
            created_at: domain::now(),
        })
    };
    let old: Vec<EventMessage> = (0..5).map(message).collect();
    for m in &old {
        assert!(store.apply_message(m).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let young = message(9);
    assert!(store.apply_message(&young).await.unwrap());

    assert_eq!(store.prune_processed_messages(cut, 3).await.unwrap(), 3);
    assert_eq!(store.prune_processed_messages(cut, 3).await.unwrap(), 2);
    assert_eq!(store.prune_processed_messages(cut, 3).await.unwrap(), 0);
    assert!(
        !store.apply_message(&young).await.unwrap(),
        "a message recorded after the cut is still recognized"
    );
    assert!(
        store.apply_message(&old[0]).await.unwrap(),
        "a forgotten message is applied again"
    );
    db.finish().await;
}
