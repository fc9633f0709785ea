//! Per-client rate limiting: off by default; when set, a token bucket per
//! client (credential, else address) on the API, never on the operations
//! routes.

use highload::auth::api_key::{KeyStore, NewKey};
use highload::auth::{AuthConfig, AuthMode, Scope};
use highload::config::RateLimitConfig;
use reqwest::Response;

use crate::helpers::{
    Stack, TestApp, TestData, assert_problem, spawn_app, spawn_app_with, test_config,
};

crate::stack_tests!(
    a_client_over_its_burst_gets_429_with_retry_after_and_others_do_not,
    clients_behind_trusted_proxies_are_told_apart_by_x_forwarded_for,
    rate_limiting_is_off_by_default,
    made_up_credentials_count_against_their_senders_address,
);

/// An app whose clients get `burst` requests, then one per 100 s: no token
/// comes back while a test runs.
async fn spawn_limited_app(stack: Stack, burst: u32, trusted_proxy_hops: u32) -> TestApp {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.guard.rate_limit = Some(RateLimitConfig {
        per_second: 0.01,
        burst,
        max_clients: 1000,
    });
    config.guard.trusted_proxy_hops = trusted_proxy_hops;
    spawn_app_with(config, data).await
}

fn header(response: &Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().expect("a number"))
}

async fn get_as(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = app.client.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent")
}

async fn a_client_over_its_burst_gets_429_with_retry_after_and_others_do_not(stack: Stack) {
    let app = spawn_limited_app(stack, 3, 0).await;
    for remaining in [2, 1, 0] {
        let response = app.get("/api/v1/users").await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), Some(3));
        assert_eq!(header(&response, "ratelimit-remaining"), Some(remaining));
        let reset = header(&response, "ratelimit-reset").expect("RateLimit-Reset");
        assert!((1..=300).contains(&reset), "{reset}");
    }

    let limited = app.get("/api/v1/users").await;
    let retry_after = header(&limited, "retry-after").expect("Retry-After");
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&limited, "ratelimit-remaining"), Some(0));
    assert_eq!(header(&limited, "ratelimit-limit"), Some(3));
    let problem = assert_problem(limited, 429, None).await;
    assert_eq!(problem["type"], "urn:highload:problem:rate-limited");
    // Writes and unknown routes of the API count too.
    let post = app
        .post(
            "/api/v1/users",
            &serde_json::json!({ "email": "x@example.com" }),
        )
        .await;
    assert_eq!(post.status(), 429);

    // The operations routes are never limited.
    for path in ["/health", "/health/live", "/health/ready", "/metrics"] {
        let response = app.get(path).await;
        assert_ne!(response.status(), 429, "{path}");
        assert_eq!(header(&response, "ratelimit-limit"), None, "{path}");
    }
    // Without AUTH_MODE no credential verifies, so none is a client of its
    // own: made-up ones count against the address, whichever header
    // carries them.
    for credential in [
        ("x-api-key", "key-one"),
        ("authorization", "Bearer key-two"),
    ] {
        let response = get_as(&app, "/api/v1/users", &[credential]).await;
        assert_eq!(response.status(), 429, "{credential:?}");
    }
}

/// 20 requests, each with a credential of its own that nobody issued:
/// how many were not 429.
async fn passed_with_made_up_credentials(app: &TestApp, header: &str, post: bool) -> usize {
    let mut passed = 0;
    for _ in 0..20 {
        let made_up = format!("hlk_{}", uuid::Uuid::new_v4().simple());
        let value = if header == "authorization" {
            format!("Bearer {made_up}")
        } else {
            made_up
        };
        let request = if post {
            app.client
                .post(app.url("/api/v1/events"))
                .json(&serde_json::json!({ "user_id": uuid::Uuid::new_v4(), "type": "t" }))
        } else {
            app.client.get(app.url("/api/v1/users"))
        };
        let response = request.header(header, value).send().await.unwrap();
        if response.status() != 429 {
            passed += 1;
        }
    }
    passed
}

async fn made_up_credentials_count_against_their_senders_address(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.guard.rate_limit = Some(RateLimitConfig {
        per_second: 0.01,
        burst: 3,
        max_clients: 1000,
    });
    config.auth = AuthConfig {
        mode: AuthMode::ApiKey,
        ..AuthConfig::default()
    };
    let app = spawn_app_with(config, data).await;
    // An address's burst, then 429: the refused keys are limited too.
    assert_eq!(
        passed_with_made_up_credentials(&app, "x-api-key", false).await,
        3
    );
    assert_eq!(
        passed_with_made_up_credentials(&app, "authorization", true).await,
        0
    );

    // A key that verified is a client of its own from then on: its first
    // request counts against the address (limited now), the next ones
    // against the key.
    let keys = KeyStore::connect(&app.config.database).await.unwrap();
    let key = NewKey::generate("reader", [Scope::Read].into_iter().collect()).unwrap();
    keys.insert(&key).await.unwrap();
    keys.close().await;
    let fresh = spawn_app_with(app.config.clone(), std::sync::Arc::clone(&app.data)).await;
    let with_key = [("x-api-key", key.secret.as_str())];
    let first = get_as(&fresh, "/api/v1/users", &with_key).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "ratelimit-remaining"),
        Some(2),
        "the address's bucket"
    );
    assert_eq!(
        passed_with_made_up_credentials(&fresh, "x-api-key", false).await,
        2
    );
    for remaining in [2, 1, 0] {
        let response = get_as(&fresh, "/api/v1/users", &with_key).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-remaining"), Some(remaining));
    }
    assert_eq!(
        get_as(&fresh, "/api/v1/users", &with_key).await.status(),
        429
    );
}

async fn clients_behind_trusted_proxies_are_told_apart_by_x_forwarded_for(stack: Stack) {
    let app = spawn_limited_app(stack, 1, 1).await;
    let from = |address: &'static str| [("x-forwarded-for", address)];
    assert_eq!(
        get_as(&app, "/api/v1/users", &from("203.0.113.1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_as(&app, "/api/v1/users", &from("203.0.113.1"))
            .await
            .status(),
        429
    );
    // Only the entry the trusted proxy appended counts: what the client
    // wrote before it is ignored.
    let spoofed = [("x-forwarded-for", "198.51.100.7, 203.0.113.1")];
    assert_eq!(get_as(&app, "/api/v1/users", &spoofed).await.status(), 429);
    assert_eq!(
        get_as(&app, "/api/v1/users", &from("203.0.113.2"))
            .await
            .status(),
        200
    );

    // Without trusted proxies the header is the client's to write, and
    // changes nothing: the peer address is the client.
    let direct = spawn_limited_app(stack, 1, 0).await;
    assert_eq!(
        get_as(&direct, "/api/v1/users", &from("203.0.113.1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_as(&direct, "/api/v1/users", &from("203.0.113.2"))
            .await
            .status(),
        429
    );
}

async fn rate_limiting_is_off_by_default(stack: Stack) {
    let app = spawn_app(stack).await;
    for _ in 0..20 {
        let response = app.get("/api/v1/users").await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), None);
    }
}
