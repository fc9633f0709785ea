//! Group commit: concurrent writes share transactions, and each request
//! still gets its own answer.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Stack, TestApp, TestData, spawn_app_with, test_config};

crate::stack_tests!(concurrent_writes_share_commits_and_each_gets_its_own_answer);

/// `db_write_batch_size`'s count (transactions) and sum (writes).
async fn batches(app: &TestApp) -> (u64, u64) {
    let text = app.get("/metrics").await.text().await.unwrap();
    let read = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} is missing from /metrics")) as u64
    };
    (
        read("db_write_batch_size_count"),
        read("db_write_batch_size_sum"),
    )
}

async fn concurrent_writes_share_commits_and_each_gets_its_own_answer(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    // Long enough that requests sent together land in one batch.
    config.database.write_batch_window = Duration::from_millis(200);
    let app = spawn_app_with(config, data).await;
    let owner = app.create_user().await;
    let owner_id = owner["id"].as_str().unwrap();
    let (batches_before, writes_before) = batches(&app).await;

    // Four requests for each of five addresses, an event for the known user
    // and one for an unknown user, all at once.
    let app = &app;
    let users = (0..20).map(|i| {
        let body = json!({
            "email": format!("group{}@example.com", i % 5),
            "first_name": "Ada",
            "last_name": "Lovelace",
        });
        async move { app.post("/api/v1/users", &body).await.status().as_u16() }
    });
    let known = json!({ "user_id": owner_id, "type": "click", "data": "{}" });
    let unknown = json!({
        "user_id": "00000000-0000-7000-8000-000000000000",
        "type": "click",
        "data": "{}",
    });
    let (user_statuses, known_status, unknown_status) = tokio::join!(
        join_all(users),
        async { app.post("/api/v1/events", &known).await.status().as_u16() },
        async { app.post("/api/v1/events", &unknown).await.status().as_u16() },
    );

    let created = user_statuses.iter().filter(|&&s| s == 201).count();
    let taken = user_statuses.iter().filter(|&&s| s == 409).count();
    assert_eq!((created, taken), (5, 15), "{user_statuses:?}");
    assert_eq!(known_status, 201);
    assert_eq!(unknown_status, 404);

    // What the answers said is what was stored.
    let list: Value = app
        .get("/api/v1/users?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 6);
    let events: Value = app.get("/api/v1/events").await.json().await.unwrap();
    assert_eq!(events["total"], 1);

    // And the writes shared transactions: the 22 above, plus those of
    // the event processor, which go the same way.
    let (batches_after, writes_after) = batches(app).await;
    let (transactions, writes) = (batches_after - batches_before, writes_after - writes_before);
    assert!(writes >= 22, "{writes} writes");
    assert!(
        transactions * 2 <= writes,
        "{transactions} transactions for {writes} writes"
    );
}
