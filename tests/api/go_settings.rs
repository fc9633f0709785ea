//! The binary started with a `.env` in the shape of the Go service's latest
//! one: its TLS, rate limit, CORS, security header and token lifetime
//! settings behave as they say, and the ones with no counterpart are named
//! in one warning.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{eventually, free_port};
use crate::https::{Authority, HOST};
use crate::process::{highload, terminate};

const ORIGIN: &str = "https://app.example.com";

#[tokio::test]
async fn the_go_services_latest_env_file_is_understood() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new();
    let issued = authority.issue();
    std::fs::write(dir.path().join("tls.crt"), &issued.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &issued.key_pem).unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "SERVER_HOST=127.0.0.1\n\
             SERVER_PORT={port}\n\
             USE_TLS=true\n\
             TLS_CERT=./tls.crt\n\
             TLS_KEY=./tls.key\n\
             AUTH_MODE=accounts\n\
             JWT_SECRET=a-go-service-secret-of-32-bytes-or-more\n\
             JWT_EXPIRATION_HOURS=2\n\
             REFRESH_EXPIRATION_DAYS=3\n\
             API_KEY_LENGTH=32\n\
             RATE_LIMIT_ENABLED=true\n\
             RATE_LIMIT_REQUESTS_PER_MINUTE=60\n\
             RATE_LIMIT_BURST_SIZE=4\n\
             RATE_LIMIT_AUTH_REQUESTS_PER_MINUTE=5\n\
             RATE_LIMIT_AUTH_BURST_SIZE=2\n\
             SECURITY_CONTENT_TYPE_NOSNIFF=true\n\
             SECURITY_FRAME_DENY=true\n\
             SECURITY_XSS_PROTECTION=true\n\
             SECURITY_REFERRER_POLICY=strict-origin-when-cross-origin\n\
             SECURITY_CSP=\"default-src 'self'\"\n\
             CORS_ALLOWED_ORIGINS={ORIGIN},https://127.0.0.1:3000\n\
             CORS_ALLOWED_METHODS=GET,POST,PUT,DELETE,OPTIONS,HEAD\n\
             CORS_ALLOW_CREDENTIALS=true\n\
             ENCRYPTION_KEY=c2VjcmV0LWtleS1vZi0zMi1ieXRlcy1leGFjdGx5ISE=\n\
             DDOS_PROTECTION_ENABLED=true\n"
        ),
    )
    .unwrap();
    // The first admin, from the same directory (and so the same .env).
    let created = highload(&dir)
        .args([
            "account",
            "create",
            "--email",
            "admin@example.com",
            "--role",
            "admin",
        ])
        .env("ACCOUNT_PASSWORD", "correct horse battery")
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");

    let log = std::fs::File::create(dir.path().join("log.json")).unwrap();
    let mut child = highload(&dir)
        .stdout(Stdio::from(log))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(authority.pem().as_bytes()).unwrap())
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let url = |path: &str| format!("https://{HOST}:{port}{path}");

    // TLS: USE_TLS with TLS_CERT and TLS_KEY.
    eventually(|| async {
        let ready = client.get(url("/health/ready")).send().await;
        ready.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health/live")).await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plain HTTP is refused"
    );

    // Token lifetimes: JWT_EXPIRATION_HOURS, REFRESH_EXPIRATION_DAYS.
    let login = |password: &'static str| {
        client
            .post(url("/api/v1/auth/login"))
            .json(&json!({ "email": "admin@example.com", "password": password }))
            .send()
    };
    let session = login("correct horse battery").await.unwrap();
    assert_eq!(session.status(), 200);
    let session: Value = session.json().await.unwrap();
    assert_eq!(session["expires_in"], 2 * 3600);
    let database = dir.path().join("data/highload.db");
    let mut db = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(&database),
    )
    .await
    .unwrap();
    let (created_at, expires_at): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT created_at, expires_at FROM auth_refresh_tokens")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(expires_at - created_at, chrono::TimeDelta::days(3));

    // The auth limit (burst 2): the second login takes the last token, a
    // third is refused, though the API's limit (burst 4) would allow it.
    assert_eq!(login("wrong password").await.unwrap().status(), 401);
    let third = login("correct horse battery").await.unwrap();
    assert_eq!(third.status(), 429);

    // The API's limit: burst 4 per credential.
    let token = session["access_token"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let listed = client
            .get(url("/api/v1/users"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        statuses.push(listed.status().as_u16());
    }
    assert_eq!(&statuses[..4], [200; 4], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");

    // CORS: its methods and credentials; security headers.
    let preflight = client
        .request(reqwest::Method::OPTIONS, url("/api/v1/users"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "HEAD")
        .send()
        .await
        .unwrap();
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("HEAD") && methods.contains("OPTIONS"),
        "{methods}"
    );
    let live = client.get(url("/health/live")).send().await.unwrap();
    assert_eq!(
        live.headers()["content-security-policy"],
        "default-src 'self'"
    );
    assert_eq!(
        live.headers()["referrer-policy"],
        "strict-origin-when-cross-origin"
    );
    assert_eq!(live.headers()["x-frame-options"], "DENY");

    let status = terminate(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    // One warning names what has no counterpart.
    let log = std::fs::read_to_string(dir.path().join("log.json")).unwrap();
    let warning = log
        .lines()
        .find(|line| line.contains("no counterpart"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    for name in [
        "ENCRYPTION_KEY",
        "DDOS_PROTECTION_ENABLED",
        "SECURITY_XSS_PROTECTION",
        "API_KEY_LENGTH",
    ] {
        assert!(warning.contains(name), "{name} not in {warning}");
    }
    for mapped in ["USE_TLS", "RATE_LIMIT_ENABLED", "CORS_ALLOW_CREDENTIALS"] {
        assert!(!warning.contains(mapped), "{mapped} in {warning}");
    }
}
