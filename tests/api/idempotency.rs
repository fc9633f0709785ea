//! `Idempotency-Key` on the POSTs that create: a retry replays the first
//! response instead of creating again; the key is kept in the database.

use std::time::Duration;

use highload::auth::{AuthConfig, AuthMode, JwtConfig, JwtKeys};
use reqwest::Response;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{
    Stack, TestApp, TestData, WriteLock, assert_problem, eventually, spawn_app, spawn_app_with,
    test_config,
};

crate::stack_tests!(
    a_post_sent_again_with_its_key_is_replayed_not_repeated,
    a_key_sent_with_another_request_is_422,
    a_key_in_use_by_a_request_in_progress_is_409,
    a_rejected_request_leaves_its_key_free,
    keys_belong_to_the_caller_not_to_its_token,
    anonymous_callers_are_told_apart_by_their_address,
    a_key_holds_across_replicas,
    an_expired_key_names_a_new_request_and_is_purged,
    a_malformed_key_is_400_naming_the_header,
);

async fn post_with_key(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    post_as(app, path, key, body, None).await
}

async fn post_as(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &Value,
    api_key: Option<&str>,
) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("idempotency-key", key)
        .json(body);
    if let Some(api_key) = api_key {
        request = request.header("x-api-key", api_key);
    }
    request.send().await.expect("request sent")
}

fn new_user(email: &str) -> Value {
    json!({ "email": email, "first_name": "Ada", "last_name": "Lovelace" })
}

fn replayed(response: &Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn total(app: &TestApp, path: &str) -> u64 {
    let body: Value = app.get(path).await.json().await.unwrap();
    body["total"].as_u64().unwrap()
}

async fn a_post_sent_again_with_its_key_is_replayed_not_repeated(stack: Stack) {
    let app = spawn_app(stack).await;
    let body = new_user("once@example.com");
    let first = post_with_key(&app, "/api/v1/users", "user-1", &body).await;
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    let created: Value = first.json().await.unwrap();

    // The trailing-slash spelling is the same request.
    for path in ["/api/v1/users", "/api/v1/users/"] {
        let again = post_with_key(&app, path, "user-1", &body).await;
        assert_eq!(again.status(), 201, "{path}");
        assert!(replayed(&again), "{path}");
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(again.json::<Value>().await.unwrap(), created, "{path}");
    }
    assert_eq!(total(&app, "/api/v1/users").await, 1);

    let user_id = created["id"].as_str().unwrap();
    let event = json!({ "user_id": user_id, "type": "login", "data": "{}" });
    let first = post_with_key(&app, "/api/v1/events", "event-1", &event).await;
    assert_eq!(first.status(), 201);
    let posted: Value = first.json().await.unwrap();
    let again = post_with_key(&app, "/api/v1/events", "event-1", &event).await;
    assert_eq!(again.status(), 201);
    assert!(replayed(&again));
    assert_eq!(again.json::<Value>().await.unwrap(), posted);
    let path = format!("/api/v1/events?user_id={user_id}");
    assert_eq!(total(&app, &path).await, 1);
    // One user_created and one login reached the workers, not two of each.
    let activity = app
        .wait_for_activity(user_id, |a| a["total_events"] == 2)
        .await;
    assert_eq!(activity["events_by_type"]["login"], 1, "{activity}");

    // Without a key, every POST creates.
    let event = json!({ "user_id": user_id, "type": "login", "data": "{}" });
    for _ in 0..2 {
        assert_eq!(app.post("/api/v1/events", &event).await.status(), 201);
    }
    assert_eq!(total(&app, &path).await, 3);
}

async fn a_key_sent_with_another_request_is_422(stack: Stack) {
    let app = spawn_app(stack).await;
    let first = post_with_key(&app, "/api/v1/users", "k", &new_user("a@example.com")).await;
    assert_eq!(first.status(), 201);
    let other_body = post_with_key(&app, "/api/v1/users", "k", &new_user("b@example.com")).await;
    let problem = assert_problem(other_body, 422, Some("Idempotency-Key")).await;
    assert_eq!(
        problem["type"],
        "urn:highload:problem:idempotency-key-reused"
    );
    let user_id = app.create_user().await["id"].clone();
    let other_path = post_with_key(
        &app,
        "/api/v1/events",
        "k",
        &json!({ "user_id": user_id, "type": "t", "data": "" }),
    )
    .await;
    assert_problem(other_path, 422, Some("Idempotency-Key")).await;
    assert_eq!(total(&app, "/api/v1/users").await, 2);
}

/// `db_write_batch_size_count` from `/metrics`: batches begun so far.
async fn batches_begun(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            name.ends_with("db_write_batch_size_count")
                .then(|| value.parse().unwrap())
        })
        .unwrap_or(0)
}

async fn a_key_in_use_by_a_request_in_progress_is_409(stack: Stack) {
    let app = spawn_app(stack).await;
    let body = new_user("slow@example.com");
    let before = batches_begun(&app).await;
    // The database's write lock holds the first request at its commit.
    let lock = WriteLock::acquire(&app, "users").await;
    let first = tokio::spawn(
        app.client
            .post(app.url("/api/v1/users"))
            .header("idempotency-key", "in-progress")
            .json(&body)
            .send(),
    );
    eventually(|| async { (batches_begun(&app).await > before).then_some(()) }).await;

    let second = post_with_key(&app, "/api/v1/users", "in-progress", &body).await;
    let problem = assert_problem(second, 409, Some("Idempotency-Key")).await;
    assert_eq!(
        problem["type"],
        "urn:highload:problem:idempotency-key-in-use"
    );

    lock.release().await;
    let first = first.await.unwrap().expect("the first request is answered");
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.unwrap();
    // Once it is answered, a retry gets its response.
    let retry = post_with_key(&app, "/api/v1/users", "in-progress", &body).await;
    assert!(replayed(&retry));
    assert_eq!(retry.json::<Value>().await.unwrap(), created);
}

async fn a_rejected_request_leaves_its_key_free(stack: Stack) {
    let app = spawn_app(stack).await;
    let taken = app.create_user().await["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let conflict = post_with_key(&app, "/api/v1/users", "retry-me", &new_user(&taken)).await;
    assert_problem(conflict, 409, Some("email")).await;
    // Not replayed: the request runs again, and is refused again.
    let again = post_with_key(&app, "/api/v1/users", "retry-me", &new_user(&taken)).await;
    assert!(!replayed(&again));
    assert_problem(again, 409, Some("email")).await;
    // The key was never taken: it may name a corrected request.
    let fixed = post_with_key(
        &app,
        "/api/v1/users",
        "retry-me",
        &new_user("new@example.com"),
    )
    .await;
    assert_eq!(fixed.status(), 201);
    assert!(!replayed(&fixed));

    let unknown = json!({ "user_id": uuid::Uuid::new_v4(), "type": "t", "data": "" });
    let missing = post_with_key(&app, "/api/v1/events", "event-key", &unknown).await;
    assert_problem(missing, 404, None).await;
    let user_id = app.create_user().await["id"].clone();
    let known = json!({ "user_id": user_id, "type": "t", "data": "" });
    let posted = post_with_key(&app, "/api/v1/events", "event-key", &known).await;
    assert_eq!(posted.status(), 201);
}

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

/// A token for `sub`, with read and write, valid for 5 minutes; `nonce`
/// makes tokens of one subject differ, as a refreshed one does.
fn token(sub: &str, nonce: u64) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": sub, "exp": now + 300, "iat": now - nonce, "scope": "read write" });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn post_with_token(app: &TestApp, key: &str, body: &Value, token: &str) -> Response {
    app.client
        .post(app.url("/api/v1/users"))
        .header("idempotency-key", key)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn keys_belong_to_the_caller_not_to_its_token(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.auth = AuthConfig {
        mode: AuthMode::Jwt,
        jwt: Some(JwtConfig {
            keys: JwtKeys::Secret(SecretString::from(SECRET)),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        }),
        ..AuthConfig::default()
    };
    let app = spawn_app_with(config, data).await;
    let ada = new_user("ada@example.com");
    let first = post_with_token(&app, "shared", &ada, &token("ada", 0)).await;
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.unwrap();

    // The same caller with a refreshed token: the same key, replayed.
    let refreshed = post_with_token(&app, "shared", &ada, &token("ada", 60)).await;
    assert_eq!(refreshed.status(), 201);
    assert!(
        replayed(&refreshed),
        "a refreshed token keeps its caller's keys"
    );
    let again: Value = refreshed.json().await.unwrap();
    assert_eq!(again["id"], created["id"]);
    let listed: Value = app
        .client
        .get(app.url("/api/v1/users"))
        .bearer_auth(token("ada", 0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1, "{listed}");

    // Another caller's key of the same name is another key.
    let grace = new_user("grace@example.com");
    let other = post_with_token(&app, "shared", &grace, &token("grace", 0)).await;
    assert_eq!(other.status(), 201);
    assert!(!replayed(&other));
    let mixed = post_with_token(&app, "shared", &grace, &token("ada", 0)).await;
    assert_problem(mixed, 422, Some("Idempotency-Key")).await;
}

async fn anonymous_callers_are_told_apart_by_their_address(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.guard.trusted_proxy_hops = 1;
    let app = spawn_app_with(config, data).await;
    let post_from = |address: &'static str, body: Value| {
        app.client
            .post(app.url("/api/v1/users"))
            .header("idempotency-key", "shared")
            .header("x-forwarded-for", address)
            .json(&body)
            .send()
    };
    let ada = post_from("203.0.113.1", new_user("ada@example.com"))
        .await
        .unwrap();
    assert_eq!(ada.status(), 201);
    // Another address: its own key, neither the first one's user replayed
    // nor a 422 for another body.
    let grace = post_from("203.0.113.2", new_user("grace@example.com"))
        .await
        .unwrap();
    assert_eq!(grace.status(), 201);
    assert!(!replayed(&grace));
    let mine = post_from("203.0.113.2", new_user("ada@example.com"))
        .await
        .unwrap();
    assert_problem(mine, 422, Some("Idempotency-Key")).await;
    let again = post_from("203.0.113.1", new_user("ada@example.com"))
        .await
        .unwrap();
    assert!(replayed(&again));
    assert_eq!(total(&app, "/api/v1/users").await, 2);
}

async fn a_key_holds_across_replicas(stack: Stack) {
    let data = TestData::new(stack).await;
    let one = spawn_app_with(test_config(&data), std::sync::Arc::clone(&data)).await;
    let two = spawn_app_with(test_config(&data), data).await;
    let body = new_user("replicated@example.com");
    let first = post_with_key(&one, "/api/v1/users", "everywhere", &body).await;
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.unwrap();
    let elsewhere = post_with_key(&two, "/api/v1/users", "everywhere", &body).await;
    assert!(replayed(&elsewhere));
    assert_eq!(elsewhere.json::<Value>().await.unwrap(), created);
    let other = post_with_key(
        &two,
        "/api/v1/users",
        "everywhere",
        &new_user("x@example.com"),
    )
    .await;
    assert_problem(other, 422, Some("Idempotency-Key")).await;
}

/// Rows of the key table, read behind the app's back.
async fn stored_keys(app: &TestApp) -> i64 {
    let count = "SELECT COUNT(*) FROM idempotency_keys";
    match app.data.database() {
        Some(options) => {
            let pool = sqlx::PgPool::connect_with(options).await.unwrap();
            let n = sqlx::query_scalar(count).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(app.sqlite_path());
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let n = sqlx::query_scalar(count).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

async fn an_expired_key_names_a_new_request_and_is_purged(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.guard.idempotency_key_ttl = Duration::from_secs(1);
    let app = spawn_app_with(config, data).await;
    let first = post_with_key(
        &app,
        "/api/v1/users",
        "short-lived",
        &new_user("a@example.com"),
    )
    .await;
    assert_eq!(first.status(), 201);
    assert_eq!(stored_keys(&app).await, 1);
    // Refused while it lives, then free for another request.
    let other = new_user("b@example.com");
    eventually(|| async {
        let response = post_with_key(&app, "/api/v1/users", "short-lived", &other).await;
        match response.status().as_u16() {
            422 => None,
            201 => {
                assert!(!replayed(&response));
                Some(())
            }
            status => panic!("unexpected {status}"),
        }
    })
    .await;
    // The purge deletes it after it expires.
    eventually(|| async { (stored_keys(&app).await == 0).then_some(()) }).await;
    assert_eq!(total(&app, "/api/v1/users").await, 2);
}

async fn a_malformed_key_is_400_naming_the_header(stack: Stack) {
    let app = spawn_app(stack).await;
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str()] {
        let response = post_with_key(&app, "/api/v1/users", key, &new_user("a@example.com")).await;
        let problem = assert_problem(response, 400, Some("Idempotency-Key")).await;
        assert_eq!(
            problem["type"], "urn:highload:problem:invalid-header",
            "{key:?}"
        );
    }
    assert_eq!(total(&app, "/api/v1/users").await, 0);
}
