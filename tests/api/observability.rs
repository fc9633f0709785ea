//! `/metrics` moves with real traffic by the right amounts.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{Stack, TestApp, eventually, spawn_app};

crate::stack_tests!(
    metrics_count_requests_cache_reads_and_events,
    unknown_methods_share_one_label_value,
);

/// Every sample of a scrape: `name{labels}` → value.
pub(crate) async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').expect("sample line");
            (key.to_owned(), value.parse().expect("numeric sample"))
        })
        .collect()
}

pub(crate) fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or_default()
}

async fn metrics_count_requests_cache_reads_and_events(stack: Stack) {
    let app = spawn_app(stack).await;
    let before = scrape(&app).await;

    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap();
    for _ in 0..2 {
        // Created users are cached: both reads are hits.
        assert_eq!(app.get(&format!("/api/v1/users/{id}")).await.status(), 200);
    }
    let missing = format!("/api/v1/users/{}", uuid::Uuid::new_v4());
    assert_eq!(app.get(&missing).await.status(), 404);
    let bad = app.post("/api/v1/users", &json!({ "email": "nope" })).await;
    assert_eq!(bad.status(), 400);
    // Before polling the activity below, which reads the user too.
    let reads = scrape(&app).await;
    let read_delta = |key: &str| value(&reads, key) - value(&before, key);
    assert_eq!(
        read_delta("cache_requests_total{kind=\"user\",result=\"hit\"}"),
        2.0
    );
    assert_eq!(
        read_delta("cache_requests_total{kind=\"user\",result=\"miss\"}"),
        1.0
    );
    let user_route = "route=\"/api/v1/users/{id}\"";
    assert_eq!(
        read_delta(&format!(
            "http_request_duration_seconds_count{{method=\"GET\",{user_route}}}"
        )),
        3.0
    );
    assert_eq!(
        read_delta(&format!(
            "http_request_duration_seconds_bucket{{method=\"GET\",{user_route},le=\"+Inf\"}}"
        )),
        3.0
    );
    for _ in 0..3 {
        app.create_event(id, "click").await;
    }
    app.wait_for_activity(id, |a| a["total_events"] == 4).await;

    let after = eventually(|| async {
        let samples = scrape(&app).await;
        (value(&samples, "events_processed_total{result=\"applied\"}") >= 4.0).then_some(samples)
    })
    .await;
    let delta = |key: &str| value(&after, key) - value(&before, key);

    assert_eq!(
        delta(&format!(
            "http_requests_total{{method=\"GET\",{user_route},status=\"200\"}}"
        )),
        2.0
    );
    assert_eq!(
        delta(&format!(
            "http_requests_total{{method=\"GET\",{user_route},status=\"404\"}}"
        )),
        1.0
    );
    assert_eq!(
        delta("http_requests_total{method=\"POST\",route=\"/api/v1/users\",status=\"201\"}"),
        1.0
    );
    assert_eq!(
        delta("http_requests_total{method=\"POST\",route=\"/api/v1/users\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        delta("http_requests_total{method=\"POST\",route=\"/api/v1/events\",status=\"201\"}"),
        3.0
    );
    assert_eq!(delta("events_published_total"), 4.0);
    assert_eq!(delta("events_consumed_total"), 4.0);
    assert_eq!(delta("events_processed_total{result=\"applied\"}"), 4.0);
    assert_eq!(delta("events_dead_lettered_total"), 0.0);
    assert_eq!(value(&after, "outbox_backlog_rows"), 0.0);
    assert_eq!(value(&after, "worker_queue_depth"), 0.0);
    assert!(value(&after, "worker_queue_capacity") >= 1000.0);
    assert!(value(&after, "process_resident_memory_bytes") > 1e6);
    assert!(value(&after, "process_open_fds") > 0.0);
    assert!(value(&after, "process_uptime_seconds") > 0.0);
    let pools: Vec<_> = after
        .keys()
        .filter(|k| k.starts_with("db_pool_max_connections{"))
        .collect();
    assert!(!pools.is_empty(), "pool metrics present");
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("highload_build_info{version=\"")),
        "build info present"
    );
    if stack == Stack::Real {
        // librdkafka reports statistics every 5 s.
        eventually(|| async {
            let samples = scrape(&app).await;
            samples
                .keys()
                .any(|k| k.starts_with("kafka_consumer_lag{"))
                .then_some(())
        })
        .await;
    }
}

async fn unknown_methods_share_one_label_value(stack: Stack) {
    let app = spawn_app(stack).await;
    let before = scrape(&app).await;
    for _ in 0..50 {
        let name = format!("X{}", uuid::Uuid::new_v4().simple()).to_uppercase();
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let response = app.request(method, "/api/v1/users", None).await;
        assert_eq!(response.status(), 405, "{name}");
    }
    let after = scrape(&app).await;
    for family in [
        "http_requests_total{",
        "http_request_duration_seconds_count{",
    ] {
        let new: Vec<_> = after
            .keys()
            .filter(|key| key.starts_with(family) && key.contains("route=\"/api/v1/users\""))
            .filter(|key| !before.contains_key(*key))
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(new[0].contains("method=\"OTHER\""), "{new:?}");
    }
}
