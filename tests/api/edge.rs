//! The HTTP edge against hostile input: request ids are bounded.

use crate::helpers::{Stack, TestApp, spawn_app};
use reqwest::header::HeaderValue;

crate::stack_tests!(
    a_valid_request_id_is_echoed,
    a_request_id_too_long_is_replaced_by_a_generated_one,
    a_request_id_that_is_not_visible_ascii_is_replaced_by_a_generated_one,
);

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
