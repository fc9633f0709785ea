use serde_json::Value;

use crate::helpers::{Stack, eventually, spawn_app};

crate::stack_tests!(
    health_reports_every_dependency_by_name,
    liveness_and_readiness_answer_200
);

async fn health_reports_every_dependency_by_name(stack: Stack) {
    let app = spawn_app(stack).await;
    // On the real stack the consumer may still be joining its group.
    let response = eventually(|| async {
        let response = app.get("/health").await;
        (response.status() == 200).then_some(response)
    })
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
    for check in ["database", "cache", "producer", "consumer"] {
        assert_eq!(
            body["checks"][check]["status"], "healthy",
            "{check}: {body}"
        );
        assert!(
            body["checks"][check]["backend"].is_string(),
            "{check}: {body}"
        );
    }
}

async fn liveness_and_readiness_answer_200(stack: Stack) {
    let app = spawn_app(stack).await;
    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap()["status"], "alive");
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}
