//! The in-process cache tier: bounded in bytes on both stacks, and on the
//! real stack kept coherent across replicas by invalidations over Redis
//! pub/sub. Two apps sharing one database and cache prefix stand for two
//! replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Stack, TestApp, TestData, eventually, spawn_app_with, test_config};
use crate::observability::{scrape, value};
use crate::services::PrivateRedis;

crate::stack_tests!(the_in_process_cache_stays_within_its_bytes);

/// The real stack only (a module of its own: each macro defines `real`).
mod replicas {
    use super::*;

    crate::real_stack_tests!(
        a_put_on_one_replica_is_read_on_the_other_within_the_bound,
        a_delete_on_one_replica_is_read_on_the_other_within_the_bound,
        a_replica_that_loses_its_subscription_bypasses_its_in_process_tier,
    );
}

/// How soon another replica must see a write: far below the local TTL the
/// replicas run with, so only an invalidation can explain it.
const BOUND: Duration = Duration::from_secs(1);
/// The local TTL of the two-replica tests.
const LONG_LOCAL_TTL: Duration = Duration::from_secs(60);

/// Two apps on the same data with `CACHE_LOCAL_TTL` set to `local_ttl`,
/// once both have their in-process tier on.
async fn two_replicas(local_ttl: Duration) -> (TestApp, TestApp) {
    let data = TestData::new(Stack::Real).await;
    let mut config = test_config(&data);
    config.cache.local.cache_local_ttl = local_ttl;
    let a = spawn_app_with(config.clone(), Arc::clone(&data)).await;
    let b = spawn_app_with(config, data).await;
    wait_for_local_tier(&a).await;
    wait_for_local_tier(&b).await;
    (a, b)
}

async fn wait_for_local_tier(app: &TestApp) {
    eventually(|| async {
        (value(&scrape(app).await, "cache_local_enabled") == 1.0).then_some(())
    })
    .await;
}

async fn local_hits(app: &TestApp) -> f64 {
    value(&scrape(app).await, "cache_local_hits_total")
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// Reads `path` on `app` until it is served from the in-process tier (the
/// first read fills it; an invalidation of an earlier write may still empty
/// it once); returns the status and body served.
async fn served_locally(app: &TestApp, path: &str) -> (u16, Value) {
    eventually(|| async {
        let before = local_hits(app).await;
        let response = app.get(path).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (local_hits(app).await > before).then_some((status, body))
    })
    .await
}

async fn cache_locally(app: &TestApp, path: &str) -> Value {
    let (status, body) = served_locally(app, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Polls until `done` holds for the answer to `GET path`, failing after
/// [`BOUND`]; returns how long it took.
async fn within_bound(app: &TestApp, path: &str, done: impl Fn(u16, &Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let response = app.get(path).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if done(status, &body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BOUND,
            "{path} still answers {status} {body} after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_put_on_one_replica_is_read_on_the_other_within_the_bound(_stack: Stack) {
    let (a, b) = two_replicas(LONG_LOCAL_TTL).await;
    let user = a.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    assert_eq!(cache_locally(&b, &path).await["first_name"], "Ada");

    let put = a.put(&path, &json!({ "first_name": "Grace" })).await;
    assert_eq!(put.status(), 200);
    within_bound(&b, &path, |status, body| {
        status == 200 && body["first_name"] == "Grace"
    })
    .await;
    // And the new value is cached in-process again, not bypassed.
    assert_eq!(cache_locally(&b, &path).await["first_name"], "Grace");
    assert!(value(&scrape(&b).await, "cache_invalidations_received_total") >= 1.0);
    // The writer reads its own write at once.
    assert_eq!(get_json(&a, &path).await["first_name"], "Grace");
}

async fn a_delete_on_one_replica_is_read_on_the_other_within_the_bound(_stack: Stack) {
    let (a, b) = two_replicas(LONG_LOCAL_TTL).await;
    let user = a.create_user().await;
    let id = user["id"].as_str().unwrap();
    let event = a.create_event(id, "click").await;
    let user_path = format!("/api/v1/users/{id}");
    let event_path = format!("/api/v1/events/{}", event["id"].as_str().unwrap());
    cache_locally(&b, &user_path).await;
    cache_locally(&b, &event_path).await;

    assert_eq!(a.delete(&user_path).await.status(), 204);
    within_bound(&b, &user_path, |status, _| status == 404).await;
    within_bound(&b, &event_path, |status, _| status == 404).await;
    // The tombstones are served in-process too.
    assert_eq!(served_locally(&b, &user_path).await.0, 404);
    assert_eq!(served_locally(&b, &event_path).await.0, 404);
}

async fn a_replica_that_loses_its_subscription_bypasses_its_in_process_tier(_stack: Stack) {
    let redis = PrivateRedis::start().await;
    let data = TestData::new(Stack::Real).await;
    let mut config = test_config(&data);
    config.cache.local.cache_local_ttl = LONG_LOCAL_TTL;
    let cache = config.cache.redis.as_mut().expect("a Redis app");
    cache.connection = redis.url().parse().expect("a Redis URL");
    cache.timeout = Duration::from_millis(200);
    let a = spawn_app_with(config.clone(), Arc::clone(&data)).await;
    let b = spawn_app_with(config, data).await;
    wait_for_local_tier(&a).await;
    wait_for_local_tier(&b).await;
    let user = a.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    cache_locally(&b, &path).await;

    // Redis stops answering: the update cannot be published, and B's
    // subscription goes quiet.
    redis.pause();
    let put = a.put(&path, &json!({ "first_name": "During" })).await;
    assert_eq!(put.status(), 200);
    // B notices within a heartbeat and its timeout, turns its tier off and
    // reads the database, long before its entries would expire.
    let started = Instant::now();
    eventually(|| async {
        let read = get_json(&b, &path).await;
        (read["first_name"] == "During").then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the new value took {:?}",
        started.elapsed()
    );
    assert_eq!(value(&scrape(&b).await, "cache_local_enabled"), 0.0);

    redis.resume();
    wait_for_local_tier(&b).await;
    assert_eq!(cache_locally(&b, &path).await["first_name"], "During");
}

async fn the_in_process_cache_stays_within_its_bytes(stack: Stack) {
    const BOUND_BYTES: u64 = 1 << 20;
    const BODIES: usize = 40;
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.cache.cache_memory_bytes = BOUND_BYTES;
    let app = spawn_app_with(config, data).await;
    if stack == Stack::Real {
        wait_for_local_tier(&app).await;
    }
    let user = app.create_user().await;
    let user_id = user["id"].as_str().unwrap();
    let mut paths = Vec::new();
    for i in 0..BODIES {
        // 60 KiB each: 40 of them are more than twice the bound.
        let payload = format!("{i:04}{}", "x".repeat(60 * 1024 - 4));
        let body = json!({ "user_id": user_id, "type": "upload", "data": payload });
        let response = app.post("/api/v1/events", &body).await;
        assert_eq!(response.status(), 201);
        let event: Value = response.json().await.unwrap();
        paths.push((
            format!("/api/v1/events/{}", event["id"].as_str().unwrap()),
            payload,
        ));
    }
    for _ in 0..2 {
        for (path, payload) in &paths {
            assert_eq!(get_json(&app, path).await["data"], *payload, "{path}");
        }
    }
    let samples = scrape(&app).await;
    let held = value(&samples, "cache_memory_bytes");
    assert_eq!(
        value(&samples, "cache_memory_max_bytes"),
        BOUND_BYTES as f64
    );
    assert!(
        held <= BOUND_BYTES as f64,
        "{held} bytes held, bound {BOUND_BYTES}"
    );
    let entries = value(&samples, "cache_memory_entries");
    assert!(
        (1.0..17.0).contains(&entries),
        "{entries} bodies of 60 KiB in 1 MiB"
    );
}
