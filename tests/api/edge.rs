//! The HTTP edge under pressure and against hostile input: the operations
//! endpoints are never shed, and request ids are bounded.

use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::helpers::{
    Stack, TestApp, TestData, WriteLock, assert_problem, eventually, spawn_app, spawn_app_with,
    test_config,
};

crate::stack_tests!(
    health_and_metrics_answer_while_the_api_sheds_load,
    a_valid_request_id_is_echoed,
    a_request_id_too_long_is_replaced_by_a_generated_one,
    a_request_id_that_is_not_visible_ascii_is_replaced_by_a_generated_one,
);

async fn health_and_metrics_answer_while_the_api_sheds_load(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.server.http_max_in_flight = 1;
    let app = spawn_app_with(config, data).await;
    // One write held in flight by the database's write lock fills the API.
    let lock = WriteLock::acquire(&app, "users").await;
    let held = tokio::spawn(
        app.client
            .post(app.url("/api/v1/users"))
            .json(&json!({ "email": "held@example.com", "first_name": "H", "last_name": "Eld" }))
            .send(),
    );
    eventually(|| async { (app.metrics.http_in_flight.get() == 1).then_some(()) }).await;

    // A second write finds the write budget full (reads have their own).
    let shed = app
        .post(
            "/api/v1/users",
            &json!({ "email": "shed@example.com", "first_name": "S", "last_name": "Hed" }),
        )
        .await;
    let problem = assert_problem(shed, 503, None).await;
    assert_eq!(problem["type"], "urn:highload:problem:overloaded");
    for path in ["/health/live", "/health/ready", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // `/health` answers with its report (200, or 503 naming a check).
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert!(health["checks"]["database"].is_object(), "{health}");

    lock.release().await;
    let held = held.await.unwrap().expect("the held request is answered");
    assert_eq!(held.status(), 201);
}

/// The `X-Request-ID` answered to a request sending `id`.
async fn answered_request_id(app: &TestApp, id: HeaderValue) -> String {
    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", id)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    response.headers()["x-request-id"]
        .to_str()
        .expect("an ASCII id")
        .to_owned()
}

fn is_generated(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

async fn a_valid_request_id_is_echoed(stack: Stack) {
    let app = spawn_app(stack).await;
    for id in [
        "req-42".to_owned(),
        "a.B_c:9/~!".to_owned(),
        "x".repeat(128),
    ] {
        let answered = answered_request_id(&app, HeaderValue::from_str(&id).unwrap()).await;
        assert_eq!(answered, id);
    }
}

async fn a_request_id_too_long_is_replaced_by_a_generated_one(stack: Stack) {
    let app = spawn_app(stack).await;
    for length in [129, 100 * 1024] {
        let id = "x".repeat(length);
        let answered = answered_request_id(&app, HeaderValue::from_str(&id).unwrap()).await;
        assert!(is_generated(&answered), "{length} bytes: {answered:.200}");
    }
}

async fn a_request_id_that_is_not_visible_ascii_is_replaced_by_a_generated_one(stack: Stack) {
    let app = spawn_app(stack).await;
    for id in [
        &b"caf\xc3\xa9"[..],
        b"\xff\xfe-raw",
        b"two words",
        b"tab\there",
    ] {
        let answered = answered_request_id(&app, HeaderValue::from_bytes(id).unwrap()).await;
        assert!(is_generated(&answered), "{id:?}: {answered}");
    }
}
