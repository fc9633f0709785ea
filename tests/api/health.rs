use std::time::Duration;

use highload::config::RedisConfig;
use serde_json::Value;

use crate::helpers::{
    Stack, TestApp, TestData, eventually, free_port, spawn_app, spawn_app_with, test_config,
};
use crate::observability::{scrape, value};

crate::stack_tests!(
    health_reports_every_dependency_by_name,
    liveness_and_readiness_answer_200,
    a_crowd_of_health_callers_adds_no_dependency_checks,
    health_names_a_down_dependency_without_operating_system_detail,
    health_shows_the_whole_error_when_asked_to,
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
        // The results are the latest of the background checks: each says
        // when it was made.
        assert!(
            body["checks"][check]["age_ms"].as_f64().unwrap() >= 0.0,
            "{check}: {body}"
        );
        assert!(
            body["checks"][check]["checked_at"].as_i64().unwrap() > 1_700_000_000,
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

async fn a_crowd_of_health_callers_adds_no_dependency_checks(stack: Stack) {
    const CALLERS: usize = 200;
    const DEPENDENCIES: [&str; 4] = ["database", "cache", "producer", "consumer"];
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    // One background check at start, then none during the test.
    config.server.health_check_interval = Duration::from_secs(60);
    let app = spawn_app_with(config, data).await;
    assert!(app.get("/health").await.status().is_success() || stack == Stack::Real);
    let before = scrape(&app).await;

    let calls = (0..CALLERS).map(|_| async {
        let response = app.get("/health").await;
        let body: Value = response.json().await.unwrap();
        assert!(body["checks"]["database"].is_object(), "{body}");
    });
    futures_util::future::join_all(calls).await;

    let after = scrape(&app).await;
    for dependency in DEPENDENCIES {
        let key = format!("health_checks_total{{dependency=\"{dependency}\"}}");
        let checks = value(&after, &key) - value(&before, &key);
        assert!(
            checks <= 1.0,
            "{CALLERS} callers made {checks} checks of the {dependency}"
        );
    }
}

/// An app whose Redis is configured at a port nothing listens on.
async fn spawn_app_with_unreachable_redis(stack: Stack, detail: bool) -> TestApp {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.cache.redis = Some(RedisConfig {
        connection: format!("redis://127.0.0.1:{}", free_port())
            .parse()
            .expect("a Redis URL"),
        timeout: Duration::from_millis(200),
    });
    config.server.health_check_interval = Duration::from_millis(100);
    config.server.health_detail = detail;
    spawn_app_with(config, data).await
}

/// The `/health` report once the cache reads as down.
async fn report_with_cache_down(app: &TestApp) -> Value {
    eventually(|| async {
        let response = app.get("/health").await;
        if response.status() != 503 {
            return None;
        }
        let body: Value = response.json().await.unwrap();
        (body["checks"]["cache"]["status"] == "unhealthy").then_some(body)
    })
    .await
}

async fn health_names_a_down_dependency_without_operating_system_detail(stack: Stack) {
    let app = spawn_app_with_unreachable_redis(stack, false).await;
    let body = report_with_cache_down(&app).await;
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["cache"]["backend"], "redis");
    assert_eq!(body["checks"]["cache"]["error"], "unavailable", "{body}");
    let text = body.to_string();
    for detail in ["os error", "refused", "127.0.0.1"] {
        assert!(!text.contains(detail), "{detail} shown: {body}");
    }
}

async fn health_shows_the_whole_error_when_asked_to(stack: Stack) {
    let app = spawn_app_with_unreachable_redis(stack, true).await;
    let body = report_with_cache_down(&app).await;
    let error = body["checks"]["cache"]["error"].as_str().unwrap();
    assert!(error.starts_with("redis did not answer PING: "), "{body}");
}
