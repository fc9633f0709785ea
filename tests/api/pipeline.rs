//! The asynchronous pipeline end to end: outbox → bus → worker pool →
//! processor → activity.

use std::time::Duration;

use highload::config::KeptFor;
use serde_json::{Value, json};

use crate::helpers::{
    Stack, TestApp, TestData, eventually, fetch_text, replay_messages, spawn_app, spawn_app_with,
    test_config,
};

crate::stack_tests!(
    every_posted_event_is_processed_exactly_once,
    processed_ids_are_kept_for_the_retention_then_pruned,
    user_lifecycle_changes_are_processed_too,
    replayed_messages_change_nothing,
    each_applied_event_reports_its_age,
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

/// `events_delay_seconds` of one stage: how many events it measured, and
/// the sum of their ages in seconds.
async fn delays(app: &TestApp, stage: &str) -> (u64, f64) {
    let text = app.get("/metrics").await.text().await.unwrap();
    let read = |part: &str| {
        let series = format!("events_delay_seconds_{part}{{stage=\"{stage}\"}}");
        text.lines()
            .find_map(|line| line.strip_prefix(&series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (read("count") as u64, read("sum"))
}

async fn each_applied_event_reports_its_age(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap();
    for _ in 0..3 {
        app.create_event(id, "login").await;
    }
    app.wait_for_activity(id, |a| a["total_events"] == 4).await;
    // The user's creation and its three events, each once.
    let (applied, age) = eventually(|| async {
        let delays = delays(&app, "applied").await;
        (delays.0 >= 4).then_some(delays)
    })
    .await;
    assert_eq!(applied, 4, "one age per applied event");
    assert!(
        age > 0.0 && age < 4.0 * 30.0,
        "the ages add up to {age} s: each is measured from its change"
    );
    let (relayed, relayed_age) = delays(&app, "relayed").await;
    assert!(
        relayed >= 4,
        "{relayed} events measured when the bus had them"
    );
    let (mean_relayed, mean_applied) = (relayed_age / relayed as f64, age / applied as f64);
    assert!(
        mean_relayed <= mean_applied,
        "an event reaches the bus (after {mean_relayed} s on average) before it is applied \
         (after {mean_applied} s)"
    );
}

/// Whether the id of the message of event `id` is among the processed ones.
async fn recorded(app: &TestApp, id: &str) -> bool {
    let sql = match app.data.stack {
        // SQLite keeps UUIDs as 16 bytes.
        Stack::Embedded => {
            "SELECT CAST(COUNT(*) AS TEXT) FROM processed_messages \
                            WHERE hex(message_id) = upper(replace($1, '-', ''))"
        }
        Stack::Real => "SELECT COUNT(*)::text FROM processed_messages WHERE message_id = $1::uuid",
    };
    fetch_text(&app.data, sql, &[id]).await == "1"
}

/// `PROCESSED_MESSAGES_RETENTION`: an id older than it is forgotten, a
/// younger one kept (a redelivery of its message still changes nothing);
/// `/metrics` says how long ids are kept. By default (`auto`) that is as
/// long as the bus may deliver a message again: on Kafka, the topic's
/// retention and a segment's age (a week each by default, and the
/// broker's five-minute check).
async fn processed_ids_are_kept_for_the_retention_then_pruned(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    if stack == Stack::Real {
        let app = spawn_app_with(config.clone(), std::sync::Arc::clone(&data)).await;
        let kept = eventually(|| async {
            let text = app.get("/metrics").await.text().await.ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("processed_message_ids_kept_seconds "))
                .filter(|kept| *kept != "0")
                .map(str::to_owned)
        })
        .await;
        assert_eq!(
            kept,
            (14 * 86400 + 300).to_string(),
            "auto, from the topic's settings"
        );
        app.stop().await.unwrap();
    }
    config.workers.processed_messages_retention = KeptFor::Duration(Duration::from_secs(2));
    let app = spawn_app_with(config, data).await;
    let user = app.create_user().await;
    let user_id = user["id"].as_str().unwrap();
    let old = app.create_event(user_id, "old").await;
    app.wait_for_activity(user_id, |a| a["total_events"] == 2)
        .await;
    let old_id = old["id"].as_str().unwrap();
    assert!(recorded(&app, old_id).await);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let young = app.create_event(user_id, "young").await;
    app.wait_for_activity(user_id, |a| a["total_events"] == 3)
        .await;
    let young_id = young["id"].as_str().unwrap();
    eventually(|| async { (!recorded(&app, old_id).await).then_some(()) }).await;
    assert!(
        recorded(&app, young_id).await,
        "an id younger than the retention is kept"
    );
    // The young message again, then a probe with the same key: once the
    // probe counts, the replay before it was processed too.
    let again = |id: &str, kind: &str| {
        json!({
            "id": id, "user_id": user_id, "type": kind, "data": young["data"],
            "timestamp": young["created_at"],
        })
    };
    let probe = uuid::Uuid::new_v4().to_string();
    replay_messages(&app, &[again(young_id, "young"), again(&probe, "probe")]).await;
    let activity = app
        .wait_for_activity(user_id, |a| a["events_by_type"]["probe"] == 1)
        .await;
    assert_eq!(activity["events_by_type"]["young"], 1, "still applied once");
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l == "processed_message_ids_kept_seconds 2"),
        "the retention set"
    );
}
