//! Restart and graceful shutdown.

use serde_json::{Value, json};

use crate::helpers::{Stack, WriteLock, eventually, spawn_app};

crate::stack_tests!(
    a_restart_keeps_users_events_and_activity,
    outbox_rows_written_before_a_stop_are_delivered_after_restart,
    shutdown_lets_in_flight_requests_finish,
);

async fn a_restart_keeps_users_events_and_activity(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap().to_owned();
    let event = app.create_event(&id, "signup").await;
    let activity = app.wait_for_activity(&id, |a| a["total_events"] == 2).await;

    let app = app.restart(|_| {}).await;
    let read: Value = app
        .get(&format!("/api/v1/users/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, user);
    let read: Value = app
        .get(&format!("/api/v1/events/{}", event["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, event);
    let after: Value = app
        .get(&format!("/api/v1/users/{id}/activity"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after, activity);
}

async fn outbox_rows_written_before_a_stop_are_delivered_after_restart(stack: Stack) {
    let data = crate::helpers::TestData::new(stack).await;
    let mut config = crate::helpers::test_config(&data);
    // An API-only instance: its writes wait in the outbox.
    config.bus.outbox_relay_enabled = false;
    let app = crate::helpers::spawn_app_with(config, data).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        app.create_event(&id, "queued").await;
    }
    let activity: Value = app
        .get(&format!("/api/v1/users/{id}/activity"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(activity["total_events"], 0, "nothing relayed yet");
    let mut expected = json!({ "user_created": 1, "queued": 4 });
    if stack == Stack::Real {
        // Let this instance's consumer finish joining its group, as a
        // long-running one would have: a member that leaves in the middle of
        // its first rebalance holds the group up to the rebalance timeout.
        let probe = json!({
            "id": uuid::Uuid::new_v4(),
            "user_id": id,
            "type": "probe",
            "data": "",
            "timestamp": user["created_at"],
        });
        crate::helpers::replay_messages(&app, &[probe]).await;
        app.wait_for_activity(&id, |a| a["total_events"] == 1).await;
        expected["probe"] = json!(1);
    }

    let app = app.restart(|c| c.bus.outbox_relay_enabled = true).await;
    let total: u64 = expected
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    let activity = app
        .wait_for_activity(&id, |a| a["total_events"] == total)
        .await;
    assert_eq!(activity["events_by_type"], expected);
}

async fn shutdown_lets_in_flight_requests_finish(stack: Stack) {
    const REQUESTS: usize = 16;
    let app = spawn_app(stack).await;
    // Hold the database's write lock so that the writes below stay in flight.
    let lock = WriteLock::acquire(&app, "users").await;
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let request = app
                .client
                .post(app.url("/api/v1/users"))
                .json(&json!({
                    "email": format!("inflight{i}@example.com"),
                    "first_name": "In",
                    "last_name": "Flight",
                }))
                .send();
            tokio::spawn(request)
        })
        .collect();
    let in_flight = &app.metrics.http_in_flight;
    eventually(|| async { (in_flight.get() == REQUESTS as i64).then_some(()) }).await;

    app.shutdown.cancel();
    // Shutdown has begun once the listener refuses new connections.
    let port = app.port;
    eventually(|| async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    lock.release().await;

    for request in requests {
        let response = request.await.unwrap().expect("in-flight request answered");
        assert_eq!(response.status(), 201);
    }
    let app = app.restart(|_| {}).await;
    let list: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(list["total"], REQUESTS, "every answered write is stored");
}
