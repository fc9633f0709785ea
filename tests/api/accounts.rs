//! Built-in accounts (`AUTH_MODE=accounts`) as a client of the Go service's
//! latest version meets them: the first admin from the command line, login,
//! refresh with rotation and theft detection, logout, profile, API keys
//! created over HTTP, the three roles, tokens signed as the Go service
//! signs them, bcrypt hashes taken over, and failed logins limited.

use std::time::Duration;

use highload::auth::{AccountsConfig, AuthConfig, AuthMode, JwtConfig, JwtKeys};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::{Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{
    Stack, TestApp, TestData, assert_problem, fetch_text, field, run_cli, spawn_app_with,
    stdout_of, test_config,
};

crate::stack_tests!(
    the_first_admin_logs_in_refreshes_and_logs_out,
    a_replayed_refresh_token_revokes_its_family,
    each_role_may_do_what_the_go_service_allowed_it,
    tokens_signed_as_the_go_service_signs_them_are_accepted,
    a_bcrypt_hash_logs_in_and_is_replaced_by_argon2id,
    failed_logins_are_limited_per_account,
    admins_see_what_the_guards_refused,
);

const SECRET: &str = "the-go-service-jwt-secret-32-bytes-long!";
pub(crate) const PASSWORD: &str = "correct horse battery";

pub(crate) fn accounts_auth() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Accounts,
        jwt: Some(JwtConfig {
            keys: JwtKeys::Secret(SecretString::from(SECRET)),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        }),
        accounts: Some(AccountsConfig {
            jwt_secret: SecretString::from(SECRET),
            access_ttl: Duration::from_secs(600),
            refresh_ttl: Duration::from_secs(3600),
            max_failures: 3,
            lockout: Duration::from_secs(60),
        }),
        ..AuthConfig::default()
    }
}

pub(crate) async fn spawn_with(
    stack: Stack,
    auth: AuthConfig,
) -> (TestApp, std::sync::Arc<TestData>) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.auth = auth;
    (spawn_app_with(config, data.clone()).await, data)
}

/// `highload account create` with the password in `ACCOUNT_PASSWORD`.
pub(crate) fn create_account(data: &TestData, email: &str, role: &str) -> String {
    let output = run_cli(
        data,
        &["account", "create", "--email", email, "--role", role],
        &[("ACCOUNT_PASSWORD", PASSWORD)],
    );
    let printed = stdout_of(&output);
    assert_eq!(field(&printed, "role:"), role, "{printed}");
    field(&printed, "id:").to_owned()
}

impl TestApp {
    fn call(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request sent")
}

async fn login(app: &TestApp, email: &str, password: &str) -> Response {
    app.post(
        "/api/v1/auth/login",
        &json!({ "email": email, "password": password }),
    )
    .await
}

async fn session(app: &TestApp, email: &str) -> Value {
    let response = login(app, email, PASSWORD).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, token: &Value) -> Response {
    app.post("/api/v1/auth/refresh", &json!({ "refresh_token": token }))
        .await
}

fn new_user() -> Value {
    json!({
        "email": format!("{}@example.com", uuid::Uuid::new_v4().simple()),
        "first_name": "Ada",
        "last_name": "Lovelace",
    })
}

/// The claims of a token, checked with the shared secret.
fn claims(token: &str) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("a valid HS256 token")
    .claims
}

async fn the_first_admin_logs_in_refreshes_and_logs_out(stack: Stack) {
    let (app, data) = spawn_with(stack, accounts_auth()).await;
    let id = create_account(&data, "Admin@Example.com", "admin");

    // Login: the Go service's fields; the token carries its claims.
    let first = session(&app, "admin@example.com").await;
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 600);
    assert_eq!(first["user"]["id"], id.as_str());
    assert_eq!(first["user"]["email"], "admin@example.com");
    assert_eq!(first["user"]["role"], "admin");
    assert_eq!(first["user"]["is_active"], true);
    assert!(first["user"].get("password_hash").is_none(), "{first}");
    let access = first["access_token"].as_str().unwrap().to_owned();
    let token = claims(&access);
    assert_eq!(token["user_id"], id.as_str());
    assert_eq!(token["email"], "admin@example.com");
    assert_eq!(token["role"], "admin");
    assert_eq!(token["iss"], "highload-microservice");
    assert_eq!(
        token["exp"].as_i64().unwrap() - token["iat"].as_i64().unwrap(),
        600
    );
    // The refresh token is stored only as a hash.
    let stored = fetch_text(
        &data,
        "SELECT token_hash FROM auth_refresh_tokens LIMIT 1",
        &[],
    )
    .await;
    assert_ne!(stored, first["refresh_token"].as_str().unwrap());

    let profile: Value = send(app.call(Method::GET, "/api/v1/auth/profile", &access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["user_id"], id.as_str());
    assert_eq!(profile["email"], "admin@example.com");
    assert_eq!(profile["role"], "admin");

    let created = send(
        app.call(Method::POST, "/api/v1/users", &access)
            .json(&new_user()),
    )
    .await;
    assert_eq!(created.status(), 201);

    // Refresh: a new pair; the old refresh token is used up.
    let second: Value = refresh(&app, &first["refresh_token"])
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["user"]["id"], id.as_str());
    let access = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        send(app.call(Method::GET, "/api/v1/users", &access))
            .await
            .status(),
        200
    );

    // Logout ends the refresh tokens; the access token lasts until it
    // expires (checked without a database read).
    let out = send(
        app.call(Method::POST, "/api/v1/auth/logout", &access)
            .json(&json!({ "refresh_token": second["refresh_token"] })),
    )
    .await;
    assert_eq!(out.status(), 200);
    assert_eq!(
        out.json::<Value>().await.unwrap()["message"],
        "Logged out successfully"
    );
    let body = assert_problem(refresh(&app, &second["refresh_token"]).await, 401, None).await;
    assert_eq!(body["error"], "Invalid refresh token", "{body}");
    assert_eq!(
        send(app.call(Method::GET, "/api/v1/users", &access))
            .await
            .status(),
        200
    );

    // Wrong password, unknown email, missing field: refused alike.
    for (email, password) in [
        ("admin@example.com", "wrong password"),
        ("nobody@example.com", PASSWORD),
    ] {
        let body = assert_problem(login(&app, email, password).await, 401, None).await;
        assert_eq!(body["error"], "Invalid credentials", "{body}");
    }
    let missing = app
        .post(
            "/api/v1/auth/login",
            &json!({ "email": "admin@example.com" }),
        )
        .await;
    assert_problem(missing, 400, None).await;
    // Without a token: 401 on the API and on one's profile.
    assert_eq!(app.get("/api/v1/users").await.status(), 401);
    assert_eq!(app.get("/api/v1/auth/profile").await.status(), 401);
}

async fn a_replayed_refresh_token_revokes_its_family(stack: Stack) {
    let (app, data) = spawn_with(stack, accounts_auth()).await;
    create_account(&data, "ada@example.com", "user");
    let first = session(&app, "ada@example.com").await;
    let second: Value = refresh(&app, &first["refresh_token"])
        .await
        .json()
        .await
        .unwrap();
    // Another login is another family, untouched by what follows.
    let other = session(&app, "ada@example.com").await;

    // The used token again: refused, and the family ends with it.
    assert_problem(refresh(&app, &first["refresh_token"]).await, 401, None).await;
    assert_problem(refresh(&app, &second["refresh_token"]).await, 401, None).await;
    assert_eq!(refresh(&app, &other["refresh_token"]).await.status(), 200);
    // An unknown token is refused the same way.
    assert_problem(refresh(&app, &json!("0".repeat(64))).await, 401, None).await;
}

/// The routes, and what each role gets: the Go service's rules (creating
/// and deleting users needs admin), where read-only really only reads.
async fn each_role_may_do_what_the_go_service_allowed_it(stack: Stack) {
    let (app, data) = spawn_with(stack, accounts_auth()).await;
    for role in ["admin", "user", "readonly"] {
        create_account(&data, &format!("{role}@example.com"), role);
    }
    let token = |session: &Value| session["access_token"].as_str().unwrap().to_owned();
    let admin = token(&session(&app, "admin@example.com").await);
    let user = token(&session(&app, "user@example.com").await);
    let readonly = token(&session(&app, "readonly@example.com").await);
    assert_role_rules(&app, &admin, &user, &readonly).await;
}

/// Calls every route with each role's token and checks the status.
async fn assert_role_rules(app: &TestApp, admin: &str, user: &str, readonly: &str) {
    let created: Value = send(
        app.call(Method::POST, "/api/v1/users", admin)
            .json(&new_user()),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let event = send(
        app.call(Method::POST, "/api/v1/events", admin)
            .json(&json!({ "user_id": id, "type": "login", "data": "{}" })),
    )
    .await;
    assert_eq!(event.status(), 201);
    let event: Value = event.json().await.unwrap();
    let event_path = format!("/api/v1/events/{}", event["id"].as_str().unwrap());
    let user_path = format!("/api/v1/users/{id}");
    let activity = format!("{user_path}/activity");
    for (token, role, expect_write, expect_admin) in [
        (admin, "admin", true, true),
        (user, "user", true, false),
        (readonly, "readonly", false, false),
    ] {
        for path in [
            "/api/v1/users",
            user_path.as_str(),
            activity.as_str(),
            "/api/v1/events",
            event_path.as_str(),
            "/api/v1/auth/profile",
        ] {
            let status = send(app.call(Method::GET, path, token)).await.status();
            assert_eq!(status, 200, "{role} GET {path}");
        }
        let write = |status: u16| if expect_write { status } else { 403 };
        let admin_only = |status: u16| if expect_admin { status } else { 403 };
        let put = send(
            app.call(Method::PUT, &user_path, token)
                .json(&json!({ "first_name": "Grace" })),
        )
        .await;
        assert_eq!(put.status(), write(200), "{role} PUT a user");
        let posted = send(
            app.call(Method::POST, "/api/v1/events", token)
                .json(&json!({ "user_id": id, "type": "click", "data": "{}" })),
        )
        .await;
        assert_eq!(posted.status(), write(201), "{role} POST an event");
        let new = send(
            app.call(Method::POST, "/api/v1/users", token)
                .json(&new_user()),
        )
        .await;
        assert_eq!(new.status(), admin_only(201), "{role} POST a user");
        let key = send(
            app.call(Method::POST, "/api/v1/api-keys", token)
                .json(&json!({ "name": format!("{role}-key"), "permissions": ["read"] })),
        )
        .await;
        assert_eq!(key.status(), admin_only(201), "{role} POST an API key");
        if expect_admin {
            // The key works as a credential, with its own scopes.
            let key: Value = key.json().await.unwrap();
            assert_eq!(key["name"], "admin-key");
            assert_eq!(key["permissions"], json!(["read"]));
            let secret = key["api_key"].as_str().unwrap();
            let read = send(
                app.client
                    .get(app.url("/api/v1/users"))
                    .header("x-api-key", secret),
            )
            .await;
            assert_eq!(read.status(), 200);
            let write = send(
                app.client
                    .post(app.url("/api/v1/users"))
                    .header("x-api-key", secret)
                    .json(&new_user()),
            )
            .await;
            assert_eq!(write.status(), 403);
        }
    }
    // Deleting a user: admin only.
    for (token, status) in [(readonly, 403), (user, 403), (admin, 204)] {
        let deleted = send(app.call(Method::DELETE, &user_path, token)).await;
        assert_eq!(deleted.status(), status);
    }
}

/// A token the way the Go service's latest version signs one: HS256 with
/// its `JWT_SECRET`, the claims `user_id`, `email`, `role`, `exp`, `iat`
/// and `iss`, and no `sub` or `scope`.
fn go_token(role: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "user_id": uuid::Uuid::new_v4().to_string(),
        "email": format!("{role}@go.example"),
        "role": role,
        "exp": now + 3600,
        "iat": now,
        "iss": "highload-microservice",
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn tokens_signed_as_the_go_service_signs_them_are_accepted(stack: Stack) {
    // AUTH_MODE=jwt with the Go service's secret, as its README said...
    let jwt = AuthConfig {
        mode: AuthMode::Jwt,
        accounts: None,
        ..accounts_auth()
    };
    let (app, _data) = spawn_with(stack, jwt).await;
    let (admin, user, readonly) = (go_token("admin"), go_token("user"), go_token("readonly"));
    for path in ["/api/v1/users", "/api/v1/events"] {
        for token in [&admin, &user, &readonly] {
            assert_eq!(send(app.call(Method::GET, path, token)).await.status(), 200);
        }
    }
    // ...where the accounts' own paths do not exist.
    assert_eq!(
        app.post(
            "/api/v1/auth/login",
            &json!({ "email": "a@b.c", "password": "x" })
        )
        .await
        .status(),
        404
    );
    let unknown_role = go_token("root");
    assert_eq!(
        send(app.call(Method::GET, "/api/v1/users", &unknown_role))
            .await
            .status(),
        403
    );
    // ...and with accounts on: every route, by role.
    let (app, _data) = spawn_with(stack, accounts_auth()).await;
    assert_role_rules(&app, &admin, &user, &readonly).await;
    let profile: Value = send(app.call(Method::GET, "/api/v1/auth/profile", &user))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["email"], "user@go.example");
    assert_eq!(profile["role"], "user");
}

async fn a_bcrypt_hash_logs_in_and_is_replaced_by_argon2id(stack: Stack) {
    let (app, data) = spawn_with(stack, accounts_auth()).await;
    create_account(&data, "legacy@example.com", "user");
    // As the Go service stored it (bcrypt, its default cost is 10).
    let bcrypt = bcrypt::hash(PASSWORD, 4).unwrap();
    let written = fetch_text(
        &data,
        "UPDATE auth_users SET password_hash = $1 WHERE email = $2 RETURNING password_hash",
        &[&bcrypt, "legacy@example.com"],
    )
    .await;
    assert!(written.starts_with("$2"), "{written}");

    assert_eq!(
        login(&app, "legacy@example.com", "not it").await.status(),
        401
    );
    session(&app, "legacy@example.com").await;
    let stored = fetch_text(
        &data,
        "SELECT password_hash FROM auth_users WHERE email = $1",
        &["legacy@example.com"],
    )
    .await;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    // The new hash verifies the same password.
    session(&app, "legacy@example.com").await;
}

async fn failed_logins_are_limited_per_account(stack: Stack) {
    let (app, data) = spawn_with(stack, accounts_auth()).await;
    create_account(&data, "target@example.com", "user");
    for _ in 0..3 {
        assert_eq!(
            login(&app, "target@example.com", "guess").await.status(),
            401
        );
    }
    // Locked: even the right password waits for the window to end.
    let locked = login(&app, "target@example.com", PASSWORD).await;
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = assert_problem(locked, 429, None).await;
    assert_eq!(
        body["type"], "urn:highload:problem:login-throttled",
        "{body}"
    );
}

async fn admins_see_what_the_guards_refused(stack: Stack) {
    let (app, data) = spawn_with(stack, accounts_auth()).await;
    create_account(&data, "admin@example.com", "admin");
    create_account(&data, "user@example.com", "user");
    let admin = session(&app, "admin@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = session(&app, "user@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Refusals of each kind: no credential, a bad body, a missing scope.
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/users").await.status(), 401);
    }
    let bad = send(
        app.call(Method::POST, "/api/v1/events", &user)
            .json(&json!({ "user_id": "nope" })),
    )
    .await;
    assert_eq!(bad.status(), 400);
    for path in [
        "/admin/ddos-stats",
        "/admin/security/stats",
        "/admin/security/events",
    ] {
        let refused = send(app.call(Method::GET, path, &user)).await;
        assert_eq!(refused.status(), 403, "{path}");
    }

    let stats: Value = send(app.call(Method::GET, "/admin/security/stats", &admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["window_seconds"], 900);
    assert_eq!(stats["by_reason"]["unauthenticated"], 3, "{stats}");
    assert_eq!(stats["by_reason"]["bad_input"], 1, "{stats}");
    assert_eq!(stats["by_reason"]["forbidden"], 3, "{stats}");
    assert_eq!(stats["by_reason"]["shed"], 0, "{stats}");
    let client = &stats["by_client"][0];
    assert_eq!(client["client"], "127.0.0.1", "{stats}");
    assert_eq!(client["refused"], 7, "{stats}");

    let ddos: Value = send(app.call(Method::GET, "/admin/ddos-stats", &admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ddos["ddos_protection"]["by_reason"], stats["by_reason"]);
    assert!(ddos["timestamp"].as_i64().unwrap() > 1_700_000_000);

    let events: Value = send(app.call(Method::GET, "/admin/security/events", &admin))
        .await
        .json()
        .await
        .unwrap();
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 7);
    // Newest first: the three 403s on the admin views.
    assert_eq!(events[0]["reason"], "forbidden");
    assert_eq!(events[0]["route"], "/admin/security/events");
    assert_eq!(events[3]["reason"], "bad_input");
    assert_eq!(events[3]["method"], "POST");
    assert_eq!(events[3]["status"], 400);

    // What has no meaning here is not there.
    for path in [
        "/admin/security/alerts",
        "/admin/security/threats",
        "/admin/security/health",
    ] {
        assert_eq!(
            send(app.call(Method::GET, path, &admin)).await.status(),
            404,
            "{path}"
        );
    }
    // Without an AUTH_MODE, nobody is admin: the views are not there.
    let open = crate::helpers::spawn_app(stack).await;
    assert_eq!(open.get("/admin/security/stats").await.status(), 404);
}
