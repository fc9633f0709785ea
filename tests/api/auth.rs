//! Authentication as a client meets it: off by default; API keys and JWTs
//! (HS256, a PEM key, a JWKS with key rotation) with scopes by method;
//! 401 and 403 as problem+json; `/metrics` behind `METRICS_TOKEN`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use highload::auth::api_key::{KeyStore, NewKey, hash_of};
use highload::auth::{AuthConfig, AuthMode, JwtConfig, JwtKeys, Scope};
use highload::config::Config;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Row;

use crate::helpers::{
    Stack, TestApp, TestData, assert_problem, eventually, spawn_app, spawn_app_with, test_config,
};

crate::stack_tests!(
    without_auth_mode_every_route_is_open,
    api_keys_grant_what_their_scopes_allow,
    a_revoked_api_key_is_refused,
    api_keys_are_stored_hashed,
    hs256_tokens_are_checked_for_signature_expiry_issuer_audience_and_scope,
    a_public_key_file_verifies_es256_tokens,
    jwks_keys_are_found_by_kid_and_rotated,
    metrics_require_their_own_token_when_set,
);

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "highload";

/// Two P-256 keys (PKCS#8), for ES256 tokens.
const EC_KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgECkZHY3VP8B9QEYj
XlGGsiqkHtWt+YsRK/Yc3kwCh3ehRANCAARg2m6RDRapCXHHSgjwG76XlMELNzNr
w7MgPh8R7GpJdbweD548W/swQmI1oC3MJeUXQ6Z+irUhnEpzfPlAsTZC
-----END PRIVATE KEY-----
";
const EC_PUBLIC_A: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYNpukQ0WqQlxx0oI8Bu+l5TBCzcz
a8OzID4fEexqSXW8Hg+ePFv7MEJiNaAtzCXlF0Omfoq1IZxKc3z5QLE2Qg==
-----END PUBLIC KEY-----
";
const EC_KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMZXRqYJdi1wsngmD
qXAyCJ5V79jpCLIqZslQX+edhV+hRANCAASb1K4XQZ1ERyee76sHSPA8rjfO2v1R
IjUvYmR3rcGn78FLROMRHnoZ9jOXo4bQiYAi16FNXZ5Qwp9+W7pkMb4b
-----END PRIVATE KEY-----
";

/// An app whose authentication settings are `auth`.
async fn spawn_with_auth(stack: Stack, auth: AuthConfig) -> TestApp {
    let data = TestData::new(stack).await;
    let mut config: Config = test_config(&data);
    config.auth = auth;
    spawn_app_with(config, data).await
}

fn jwt_auth(keys: JwtKeys) -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Jwt,
        jwt: Some(JwtConfig {
            keys,
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            leeway: Duration::from_secs(5),
        }),
        ..AuthConfig::default()
    }
}

impl TestApp {
    fn with(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request sent")
}

fn new_user() -> Value {
    json!({
        "email": format!("{}@example.com", uuid::Uuid::new_v4().simple()),
        "first_name": "Ada",
        "last_name": "Lovelace",
    })
}

/// A 401 as the API answers it: problem+json and a Bearer challenge.
async fn assert_unauthorized(response: Response) -> Value {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate on a 401")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body = assert_problem(response, 401, None).await;
    assert_eq!(body["type"], "urn:highload:problem:unauthorized", "{body}");
    body
}

async fn assert_forbidden(response: Response) -> Value {
    let body = assert_problem(response, 403, None).await;
    assert_eq!(body["type"], "urn:highload:problem:forbidden", "{body}");
    body
}

/// Routes that stay open whatever the mode. `/health` is 200 once the
/// service has finished starting (on the real stack, its topics created).
async fn assert_open_routes(app: &TestApp) {
    eventually(|| async { (app.get("/health").await.status() == 200).then_some(()) }).await;
    for path in ["/health/live", "/health/ready", "/docs", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

async fn create_key(app: &TestApp, name: &str, scopes: &[Scope]) -> (uuid::Uuid, String) {
    let keys = KeyStore::connect(&app.config.database).await.unwrap();
    let key = NewKey::generate(name, scopes.iter().copied().collect()).unwrap();
    keys.insert(&key).await.unwrap();
    keys.close().await;
    (key.record.id, key.secret)
}

async fn without_auth_mode_every_route_is_open(stack: Stack) {
    let app = spawn_app(stack).await;
    let created = send(app.with(Method::POST, "/api/v1/users").json(&new_user())).await;
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    assert_eq!(app.get(&path).await.status(), 200);
    assert_eq!(app.delete(&path).await.status(), 204);
    assert_eq!(app.get("/metrics").await.status(), 200);
    assert_open_routes(&app).await;

    // The document declares the schemes even when they are not enforced.
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key", "{schemes}");
    let delete = &doc["paths"]["/api/v1/users/{id}"]["delete"];
    assert!(delete["responses"]["403"].is_object(), "{delete}");
    assert_eq!(delete["security"][1]["bearer"][0], "admin", "{delete}");
}

async fn api_keys_grant_what_their_scopes_allow(stack: Stack) {
    let app = spawn_with_auth(
        stack,
        AuthConfig {
            mode: AuthMode::ApiKey,
            ..AuthConfig::default()
        },
    )
    .await;
    let (_, reader) = create_key(&app, "reader", &[Scope::Read]).await;
    let (_, writer) = create_key(&app, "writer", &[Scope::Read, Scope::Write]).await;
    let (_, admin) = create_key(&app, "admin", &[Scope::Admin]).await;

    // No key, a malformed one, an unknown one: 401.
    let body = assert_unauthorized(app.get("/api/v1/users").await).await;
    assert!(
        body["detail"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
    assert_unauthorized(
        send(
            app.with(Method::GET, "/api/v1/users")
                .header("x-api-key", "nope"),
        )
        .await,
    )
    .await;
    let unknown = format!("{}x", &reader[..reader.len() - 1]);
    assert_unauthorized(send(app.with(Method::GET, "/api/v1/users").bearer_auth(&unknown)).await)
        .await;
    assert_unauthorized(
        send(
            app.with(Method::GET, "/api/v1/users")
                .header("authorization", format!("Basic {reader}")),
        )
        .await,
    )
    .await;

    // read: GET, not POST.
    let listed = send(
        app.with(Method::GET, "/api/v1/users")
            .header("x-api-key", &reader),
    )
    .await;
    assert_eq!(listed.status(), 200);
    let refused = send(
        app.with(Method::POST, "/api/v1/users")
            .bearer_auth(&reader)
            .json(&new_user()),
    )
    .await;
    let body = assert_forbidden(refused).await;
    assert!(body["detail"].as_str().unwrap().contains("write"), "{body}");

    // write: POST, as Bearer or X-API-Key; not DELETE.
    let created = send(
        app.with(Method::POST, "/api/v1/users")
            .bearer_auth(&writer)
            .json(&new_user()),
    )
    .await;
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    let event = json!({ "user_id": user["id"], "type": "click", "data": "{}" });
    let posted = send(
        app.with(Method::POST, "/api/v1/events")
            .header("x-api-key", &writer)
            .json(&event),
    )
    .await;
    assert_eq!(posted.status(), 201);
    let updated = send(
        app.with(Method::PUT, &path)
            .bearer_auth(&writer)
            .json(&json!({ "first_name": "Ida" })),
    )
    .await;
    assert_eq!(updated.status(), 200);
    assert_forbidden(send(app.with(Method::DELETE, &path).bearer_auth(&writer)).await).await;
    assert_forbidden(send(app.with(Method::DELETE, &path).bearer_auth(&reader)).await).await;

    // admin: DELETE, and everything else.
    assert_eq!(
        send(app.with(Method::GET, &path).bearer_auth(&admin))
            .await
            .status(),
        200
    );
    assert_eq!(
        send(app.with(Method::DELETE, &path).bearer_auth(&admin))
            .await
            .status(),
        204
    );

    // Trailing slashes are the same routes, under the same rules.
    assert_unauthorized(app.get("/api/v1/users/").await).await;
    assert_eq!(
        send(app.with(Method::GET, "/api/v1/users/").bearer_auth(&reader))
            .await
            .status(),
        200
    );

    assert_open_routes(&app).await;
    assert_eq!(
        app.get("/metrics").await.status(),
        200,
        "METRICS_TOKEN unset"
    );
}

async fn a_revoked_api_key_is_refused(stack: Stack) {
    // Zero: the key is looked up at every request, so revocation is seen
    // at once (in production within API_KEY_CACHE_TTL).
    let app = spawn_with_auth(
        stack,
        AuthConfig {
            mode: AuthMode::ApiKey,
            api_key_cache_ttl: Duration::ZERO,
            ..AuthConfig::default()
        },
    )
    .await;
    let (id, key) = create_key(&app, "soon revoked", &[Scope::Read]).await;
    assert_eq!(
        send(app.with(Method::GET, "/api/v1/users").bearer_auth(&key))
            .await
            .status(),
        200
    );
    let keys = KeyStore::connect(&app.config.database).await.unwrap();
    assert!(keys.revoke(id).await.unwrap());
    assert!(!keys.revoke(id).await.unwrap(), "already revoked");
    let listed = keys.list().await.unwrap();
    keys.close().await;
    assert!(listed.iter().any(|k| k.id == id && k.revoked_at.is_some()));
    let body =
        assert_unauthorized(send(app.with(Method::GET, "/api/v1/users").bearer_auth(&key)).await)
            .await;
    assert_eq!(
        body["detail"], "the API key is not valid",
        "no reason beyond this"
    );
}

async fn api_keys_are_stored_hashed(stack: Stack) {
    let app = spawn_with_auth(
        stack,
        AuthConfig {
            mode: AuthMode::ApiKey,
            ..AuthConfig::default()
        },
    )
    .await;
    let (id, key) = create_key(&app, "stored", &[Scope::Read, Scope::Write]).await;
    assert!(key.starts_with("hlk_") && key.len() >= 4 + 43, "{key}");
    // Every column, as text, straight from the database.
    let sql = "SELECT name, key_hash, shown, scopes FROM api_keys";
    let row: Vec<String> = match app.data.database() {
        Some(options) => {
            let pool = sqlx::PgPool::connect_with(options).await.unwrap();
            let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            (0..4usize).map(|i| row.get::<String, _>(i)).collect()
        }
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(app.sqlite_path());
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            (0..4usize).map(|i| row.get::<String, _>(i)).collect()
        }
    };
    let secret_part = &key[4..];
    assert!(
        row.iter().all(|value| !value.contains(secret_part)),
        "{row:?}"
    );
    assert_eq!(row[1], hash_of(&key), "the SHA-256 of the key");
    assert_eq!(row[3], "read,write");
    assert!(key.starts_with(&row[2]));
    assert!(!id.is_nil());
}

fn claims(scope: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({ "sub": "client-1", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now, "scope": scope })
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// An HS256 token with a header written as given (the library's `Header`
/// cannot hold every header field).
fn hs256_with_header(header: &Value, claims: &Value, secret: &str) -> String {
    use base64::Engine as _;
    let encode = |value: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    };
    let message = format!("{}.{}", encode(header), encode(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

fn es256(claims: &Value, pem: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn hs256_tokens_are_checked_for_signature_expiry_issuer_audience_and_scope(stack: Stack) {
    let app = spawn_with_auth(stack, jwt_auth(JwtKeys::Secret(SecretString::from(SECRET)))).await;
    let get = |token: String| send(app.with(Method::GET, "/api/v1/users").bearer_auth(token));

    assert_eq!(get(hs256(&claims("read"), SECRET)).await.status(), 200);
    // `scp` as a list works as well as `scope`.
    let mut scp = claims("");
    scp["scope"] = Value::Null;
    scp.as_object_mut().unwrap().remove("scope");
    scp["scp"] = json!(["openid", "read"]);
    assert_eq!(get(hs256(&scp, SECRET)).await.status(), 200);

    let mut expired = claims("read");
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 60);
    let body = assert_unauthorized(get(hs256(&expired, SECRET)).await).await;
    assert_eq!(body["detail"], "the token has expired");
    // Within JWT_LEEWAY an expired token still passes.
    let mut skewed = claims("read");
    skewed["exp"] = json!(jsonwebtoken::get_current_timestamp() - 2);
    assert_eq!(get(hs256(&skewed, SECRET)).await.status(), 200);

    let mut audience = claims("read");
    audience["aud"] = json!("another-service");
    let body = assert_unauthorized(get(hs256(&audience, SECRET)).await).await;
    assert_eq!(
        body["detail"], "the token is not valid",
        "no detail of the check"
    );
    let mut issuer = claims("read");
    issuer["iss"] = json!("https://evil.example");
    assert_unauthorized(get(hs256(&issuer, SECRET)).await).await;
    let mut no_expiry = claims("read");
    no_expiry.as_object_mut().unwrap().remove("exp");
    assert_unauthorized(get(hs256(&no_expiry, SECRET)).await).await;
    assert_unauthorized(
        get(hs256(
            &claims("read"),
            "another-secret-of-at-least-32-bytes",
        ))
        .await,
    )
    .await;
    assert_unauthorized(get("not.a.token".into()).await).await;

    // What the library lets pass: an expiry no date can be, an issuer
    // that is a list, critical extensions this service does not know.
    let mut forever = claims("read");
    forever["exp"] = json!(1u64 << 63);
    assert_unauthorized(get(hs256(&forever, SECRET)).await).await;
    let mut issuers = claims("read");
    issuers["iss"] = json!([ISSUER, "https://evil.example"]);
    assert_unauthorized(get(hs256(&issuers, SECRET)).await).await;
    let critical =
        json!({ "alg": "HS256", "typ": "JWT", "crit": ["urn:example:ext"], "urn:example:ext": 1 });
    assert_unauthorized(get(hs256_with_header(&critical, &claims("read"), SECRET)).await).await;
    let plain = json!({ "alg": "HS256", "typ": "JWT" });
    assert_eq!(
        get(hs256_with_header(&plain, &claims("read"), SECRET))
            .await
            .status(),
        200,
        "the same token without crit"
    );
    // A token signed with another algorithm than the key's is refused.
    assert_unauthorized(get(es256(&claims("read"), EC_KEY_A, None)).await).await;
    assert_unauthorized(app.get("/api/v1/users").await).await;

    // Valid, without the scope: 403.
    let post = |token: String| {
        send(
            app.with(Method::POST, "/api/v1/users")
                .bearer_auth(token)
                .json(&new_user()),
        )
    };
    assert_forbidden(post(hs256(&claims("read"), SECRET)).await).await;
    assert_forbidden(get(hs256(&claims("profile email"), SECRET)).await).await;
    let created = post(hs256(&claims("read write"), SECRET)).await;
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    let delete = |token: String| send(app.with(Method::DELETE, &path).bearer_auth(token));
    assert_forbidden(delete(hs256(&claims("read write"), SECRET)).await).await;
    assert_eq!(delete(hs256(&claims("admin"), SECRET)).await.status(), 204);
    assert_open_routes(&app).await;
}

async fn a_public_key_file_verifies_es256_tokens(stack: Stack) {
    let app = spawn_with_auth(
        stack,
        jwt_auth(JwtKeys::PublicKeyPem(EC_PUBLIC_A.as_bytes().to_vec())),
    )
    .await;
    let get = |token: String| send(app.with(Method::GET, "/api/v1/users").bearer_auth(token));
    assert_eq!(
        get(es256(&claims("read"), EC_KEY_A, None)).await.status(),
        200
    );
    assert_unauthorized(get(es256(&claims("read"), EC_KEY_B, None)).await).await;
    assert_unauthorized(get(hs256(&claims("read"), SECRET)).await).await;
}

/// A JWKS served over HTTP on a port of its own; `set` replaces its keys.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start() -> Self {
        use axum::routing::get;
        let keys = Arc::new(Mutex::new(json!({ "keys": [] })));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let router = axum::Router::new().route(
            "/jwks.json",
            get({
                let keys = Arc::clone(&keys);
                let fetches = Arc::clone(&fetches);
                move || {
                    fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let set = keys.lock().unwrap().clone();
                    async move { axum::Json(set) }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, keys, fetches }
    }

    /// Publishes the public halves of `keys`, as (kid, private PEM).
    fn publish(&self, keys: &[(&str, &str)]) {
        let set = JwkSet {
            keys: keys
                .iter()
                .map(|(kid, pem)| {
                    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
                    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
                    jwk.common.key_id = Some((*kid).to_owned());
                    jwk
                })
                .collect(),
        };
        *self.keys.lock().unwrap() = serde_json::to_value(set).unwrap();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn jwks_keys_are_found_by_kid_and_rotated(stack: Stack) {
    let jwks = JwksServer::start().await;
    jwks.publish(&[("key-a", EC_KEY_A)]);
    let app = spawn_with_auth(
        stack,
        jwt_auth(JwtKeys::Jwks {
            url: jwks.url.clone(),
            refresh: Duration::from_secs(600),
            min_refresh: Duration::ZERO,
        }),
    )
    .await;
    let get = |token: String| send(app.with(Method::GET, "/api/v1/users").bearer_auth(token));

    assert_eq!(
        get(es256(&claims("read"), EC_KEY_A, Some("key-a")))
            .await
            .status(),
        200
    );
    assert_eq!(
        get(es256(&claims("read"), EC_KEY_A, Some("key-a")))
            .await
            .status(),
        200
    );
    assert_eq!(jwks.fetches(), 1, "the set is fetched once, then kept");
    // Signed by key A under B's name: the signature does not verify.
    assert_unauthorized(get(es256(&claims("read"), EC_KEY_A, Some("key-b"))).await).await;

    // Rotation: the issuer now signs with B; the unknown kid fetches again.
    jwks.publish(&[("key-b", EC_KEY_B)]);
    assert_eq!(
        get(es256(&claims("read"), EC_KEY_B, Some("key-b")))
            .await
            .status(),
        200
    );
    assert_unauthorized(get(es256(&claims("read"), EC_KEY_A, Some("key-a"))).await).await;
    assert_forbidden(
        send(
            app.with(Method::POST, "/api/v1/users")
                .bearer_auth(es256(&claims("read"), EC_KEY_B, Some("key-b")))
                .json(&new_user()),
        )
        .await,
    )
    .await;
}

async fn metrics_require_their_own_token_when_set(stack: Stack) {
    let app = spawn_with_auth(
        stack,
        AuthConfig {
            metrics_token: Some(SecretString::from("scrape-token-1234")),
            ..AuthConfig::default()
        },
    )
    .await;
    assert_unauthorized(app.get("/metrics").await).await;
    assert_unauthorized(
        send(
            app.with(Method::GET, "/metrics")
                .bearer_auth("scrape-token-123"),
        )
        .await,
    )
    .await;
    let scraped = send(
        app.with(Method::GET, "/metrics")
            .bearer_auth("scrape-token-1234"),
    )
    .await;
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("http_requests"));
    // The API stays as AUTH_MODE says: open.
    assert_eq!(app.get("/api/v1/users").await.status(), 200);
    assert_open_routes(&app).await;
}
