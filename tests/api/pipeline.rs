//! The asynchronous pipeline end to end: outbox → bus → worker pool →
//! processor → activity.

use serde_json::{Value, json};

use crate::helpers::{Stack, replay_messages, spawn_app};

crate::stack_tests!(
    every_posted_event_is_processed_exactly_once,
    user_lifecycle_changes_are_processed_too,
    replayed_messages_change_nothing,
);

async fn every_posted_event_is_processed_exactly_once(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap();
    let mut last = Value::Null;
    for i in 0..30 {
        let kind = if i % 3 == 0 { "purchase" } else { "page_view" };
        last = app.create_event(id, kind).await;
    }
    let activity = app.wait_for_activity(id, |a| a["total_events"] == 31).await;
    assert_eq!(
        activity["events_by_type"],
        json!({ "user_created": 1, "page_view": 20, "purchase": 10 })
    );
    assert_eq!(activity["user_id"], user["id"]);
    assert_eq!(activity["last_event_at"], last["created_at"]);
    // Another user's activity is separate.
    let other = app.create_user().await;
    let theirs = app
        .wait_for_activity(other["id"].as_str().unwrap(), |a| a["total_events"] == 1)
        .await;
    assert_eq!(theirs["events_by_type"], json!({ "user_created": 1 }));
}

async fn user_lifecycle_changes_are_processed_too(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap();
    let path = format!("/api/v1/users/{id}");
    assert_eq!(
        app.put(&path, &json!({ "first_name": "B" })).await.status(),
        200
    );
    assert_eq!(
        app.put(&path, &json!({ "last_name": "C" })).await.status(),
        200
    );
    let activity = app.wait_for_activity(id, |a| a["total_events"] == 3).await;
    assert_eq!(
        activity["events_by_type"],
        json!({ "user_created": 1, "user_updated": 2 })
    );
}

async fn replayed_messages_change_nothing(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap();
    let mut messages = Vec::new();
    for _ in 0..5 {
        let event = app.create_event(id, "login").await;
        messages.push(json!({
            "id": event["id"],
            "user_id": event["user_id"],
            "type": event["type"],
            "data": event["data"],
            "timestamp": event["created_at"],
        }));
    }
    let before = app.wait_for_activity(id, |a| a["total_events"] == 6).await;

    // Every message again, then one never seen: only that one may count.
    // It has the same key, so once it is processed the replays before it
    // are too.
    let mut replay = messages.clone();
    replay.extend(messages);
    replay.push(json!({
        "id": uuid::Uuid::new_v4(),
        "user_id": id,
        "type": "replay_probe",
        "data": "",
        "timestamp": before["last_event_at"],
    }));
    replay_messages(&app, &replay).await;

    let after = app
        .wait_for_activity(id, |a| a["events_by_type"]["replay_probe"] == 1)
        .await;
    assert_eq!(after["total_events"], 7);
    assert_eq!(
        after["events_by_type"],
        json!({ "user_created": 1, "login": 5, "replay_probe": 1 })
    );
}
