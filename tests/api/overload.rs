//! Admission control under a saturated store: writes beyond what the
//! database serves get 503 with `Retry-After` quickly and are counted,
//! while cached reads, health probes and scrapes still answer.

use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::helpers::{
    Stack, TestApp, TestData, WriteLock, assert_problem, eventually, spawn_app_with, test_config,
};

crate::stack_tests!(
    writes_beyond_the_limit_are_shed_quickly_while_reads_and_probes_answer,
    without_a_queue_writes_beyond_the_limit_are_shed_at_once,
    a_write_waiting_for_admission_is_admitted_when_a_slot_frees,
);

/// Most writes in flight in these tests (the limit's ceiling).
const LIMIT: usize = 4;

async fn spawn_limited_app(stack: Stack, queue_timeout: Duration) -> TestApp {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.server.http_max_in_flight = LIMIT as u32;
    config.server.admission.admission_queue_timeout = queue_timeout;
    spawn_app_with(config, data).await
}

fn post_user(app: &TestApp, name: &str) -> JoinHandle<reqwest::Result<Response>> {
    let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
    tokio::spawn(
        app.client
            .post(app.url("/api/v1/users"))
            .json(&json!({ "email": email, "first_name": "Held", "last_name": "Write" }))
            .send(),
    )
}

/// Fills the write budget with writes that the lock holds in flight.
async fn hold_writes(app: &TestApp) -> Vec<JoinHandle<reqwest::Result<Response>>> {
    let held: Vec<_> = (0..LIMIT)
        .map(|i| post_user(app, &format!("held{i}")))
        .collect();
    eventually(|| async { (app.metrics.http_in_flight.get() == LIMIT as i64).then_some(()) }).await;
    held
}

async fn assert_answered_with(held: Vec<JoinHandle<reqwest::Result<Response>>>, status: u16) {
    for request in held {
        let response = request.await.unwrap().expect("the request is answered");
        assert_eq!(response.status(), status);
    }
}

/// The value of one sample in `/metrics`, 0 when absent.
async fn metric(app: &TestApp, sample: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().expect("a count"))
}

/// POSTs one more user, expecting it shed: 503 `overloaded` with
/// `Retry-After`. Returns how long the answer took.
async fn assert_write_shed(app: &TestApp) -> Duration {
    let started = Instant::now();
    let response = post_user(app, "shed").await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = assert_problem(response, 503, None).await;
    assert_eq!(problem["type"], "urn:highload:problem:overloaded");
    took
}

async fn writes_beyond_the_limit_are_shed_quickly_while_reads_and_probes_answer(stack: Stack) {
    let app = spawn_limited_app(stack, Duration::from_millis(200)).await;
    let user = app.create_user().await;
    let user_path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    let lock = WriteLock::acquire(&app, "users").await;
    let held = hold_writes(&app).await;

    let took = assert_write_shed(&app).await;
    assert!(took < Duration::from_secs(2), "shed after {took:?}");
    // Reads have a budget of their own: the stalled writes do not take it.
    let read = app.get(&user_path).await;
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["id"], user["id"]);
    for path in ["/health/live", "/health/ready", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    let sample = r#"http_requests_shed_total{class="write",reason="queue_timeout"}"#;
    assert_eq!(metric(&app, sample).await, 1);
    let waiting = r#"http_admission_in_flight{class="write"}"#;
    assert_eq!(metric(&app, waiting).await, LIMIT as u64);

    lock.release().await;
    assert_answered_with(held, 201).await;
    let after = post_user(&app, "after").await.unwrap().unwrap();
    assert_eq!(after.status(), 201, "admitted again");
}

async fn without_a_queue_writes_beyond_the_limit_are_shed_at_once(stack: Stack) {
    let app = spawn_limited_app(stack, Duration::ZERO).await;
    let lock = WriteLock::acquire(&app, "users").await;
    let held = hold_writes(&app).await;

    for _ in 0..3 {
        let took = assert_write_shed(&app).await;
        assert!(took < Duration::from_secs(1), "shed after {took:?}");
    }
    assert_eq!(app.get("/health/live").await.status(), 200);
    let sample = r#"http_requests_shed_total{class="write",reason="queue_full"}"#;
    assert_eq!(metric(&app, sample).await, 3);

    lock.release().await;
    assert_answered_with(held, 201).await;
}

async fn a_write_waiting_for_admission_is_admitted_when_a_slot_frees(stack: Stack) {
    let app = spawn_limited_app(stack, Duration::from_secs(20)).await;
    let lock = WriteLock::acquire(&app, "users").await;
    let held = hold_writes(&app).await;
    let waiting = post_user(&app, "waiting");
    let sample = r#"http_admission_waiting{class="write"}"#;
    eventually(|| async { (metric(&app, sample).await == 1).then_some(()) }).await;

    lock.release().await;
    assert_answered_with(held, 201).await;
    assert_answered_with(vec![waiting], 201).await;
    let shed = r#"http_requests_shed_total{class="write",reason="queue_timeout"}"#;
    assert_eq!(metric(&app, shed).await, 0);
}
