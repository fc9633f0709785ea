//! `EVENTS_RETENTION`: events older than it leave the lists, their totals
//! and reads by id; the activity they added up to stays.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    Stack, TestApp, TestData, eventually, fetch_text, spawn_app_with, test_config,
};

crate::stack_tests!(events_past_the_retention_leave_lists_totals_and_reads);

const KEEP: Duration = Duration::from_secs(5);

/// The ids a list returns, and its total.
async fn listed(app: &TestApp, query: &str) -> (Vec<String>, u64) {
    let body: Value = app
        .get(&format!("/api/v1/events?{query}"))
        .await
        .json()
        .await
        .unwrap();
    let ids = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, body["total"].as_u64().unwrap())
}

async fn events_past_the_retention_leave_lists_totals_and_reads(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.database.events_retention = Some(KEEP);
    let app = spawn_app_with(config, std::sync::Arc::clone(&data)).await;
    let user = app.create_user().await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    let mut old = Vec::new();
    for kind in ["login", "login", "purchase"] {
        let event = app.create_event(&user_id, kind).await;
        old.push(event["id"].as_str().unwrap().to_owned());
    }
    for id in &old {
        // Read once, so that the caches hold them.
        assert_eq!(app.get(&format!("/api/v1/events/{id}")).await.status(), 200);
    }
    // A read by id goes at most a second after the retention (the id's
    // time, to the millisecond, is checked with a second to spare).
    tokio::time::sleep(KEEP + Duration::from_millis(1100)).await;

    let young = app.create_event(&user_id, "login").await;
    let young_id = young["id"].as_str().unwrap().to_owned();
    for id in &old {
        assert_eq!(
            app.get(&format!("/api/v1/events/{id}")).await.status(),
            404,
            "an expired event is gone from reads, cached or not"
        );
    }
    let by_user = format!("user_id={user_id}");
    eventually(|| async {
        (listed(&app, &by_user).await == (vec![young_id.clone()], 1)).then_some(())
    })
    .await;
    assert_eq!(listed(&app, "").await, (vec![young_id.clone()], 1));
    assert_eq!(
        listed(&app, &format!("{by_user}&type=login")).await,
        (vec![young_id.clone()], 1)
    );
    assert_eq!(listed(&app, "type=purchase").await, (vec![], 0));
    assert_eq!(
        app.get(&format!("/api/v1/events/{young_id}"))
            .await
            .status(),
        200
    );
    let stored = match stack {
        Stack::Embedded => "SELECT CAST(COUNT(*) AS TEXT) FROM events",
        Stack::Real => "SELECT COUNT(*)::text FROM events",
    };
    assert_eq!(
        fetch_text(&data, stored, &[]).await,
        "1",
        "the rows are deleted"
    );

    let activity = app
        .wait_for_activity(&user_id, |a| a["total_events"] == 5)
        .await;
    assert_eq!(activity["events_by_type"]["login"], 3, "{activity}");
    assert_eq!(activity["events_by_type"]["purchase"], 1, "{activity}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "events_expired_total 3"),
        "{metrics}"
    );
}
