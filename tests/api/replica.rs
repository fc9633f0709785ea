//! Reads from a streaming replica (`DATABASE_READ_URL`): the replica of
//! `scripts/dev-services.sh` (`TEST_DATABASE_READ_URL`), its replay paused
//! to make it lag.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{
    Stack, TestApp, TestData, eventually, fetch_text, spawn_app_with, test_config,
};

crate::real_stack_tests!(a_client_reads_its_own_writes_through_a_lagging_replica);

const MAX_LAG: Duration = Duration::from_secs(4);

/// Replay on the replica is paused while this lives.
struct Paused(PgConnectOptions);

impl Paused {
    async fn new(replica: PgConnectOptions) -> Self {
        run_on(&replica, "SELECT pg_wal_replay_pause()").await;
        Self(replica)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let replica = self.0.clone();
        // Drop runs inside the test's runtime: resume from a thread.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run_on(&replica, "SELECT pg_wal_replay_resume()"));
        })
        .join()
        .unwrap();
    }
}

async fn run_on(server: &PgConnectOptions, sql: &str) {
    let pool = sqlx::PgPool::connect_with(server.clone().database("postgres"))
        .await
        .unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

/// The replica's lag as `/metrics` reports it.
async fn lag(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("db_replica_lag_seconds "))
        .unwrap_or_else(|| panic!("no db_replica_lag_seconds in\n{text}"))
        .parse()
        .unwrap()
}

/// A request from the client at `address` (behind one trusted proxy).
async fn as_client(
    app: &TestApp,
    address: &str,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let request = match &body {
        Some(body) => app.client.post(app.url(path)).json(body),
        None => app.client.get(app.url(path)),
    };
    request
        .header("x-forwarded-for", address)
        .send()
        .await
        .unwrap()
}

/// How many users the first page of the list shows `address` (not its
/// total: a row written straight to the database is not counted in it).
async fn users_listed(app: &TestApp, address: &str) -> usize {
    let body: Value = as_client(app, address, "/api/v1/users", None)
        .await
        .json()
        .await
        .unwrap();
    body["users"].as_array().unwrap().len()
}

/// While the replica lags, a client that wrote reads its write (from the
/// primary) and another client reads the replica (without it); a row the
/// replica lacks is read from the primary; past `DB_READ_MAX_LAG` every
/// read goes to the primary; once replay resumes, the replica serves
/// again with everything.
async fn a_client_reads_its_own_writes_through_a_lagging_replica(stack: Stack) {
    let data = TestData::new(stack).await;
    let replica = data.replica().expect(
        "the real stack has a replica (TEST_DATABASE_READ_URL; scripts/dev-services.sh starts \
         one on 127.0.0.1:5433)",
    );
    let mut config = test_config(&data);
    config.guard.trusted_proxy_hops = 1;
    config.database.read_replica.as_mut().unwrap().max_lag = MAX_LAG;
    let app = spawn_app_with(config, Arc::clone(&data)).await;
    eventually(|| async { (lag(&app).await < 0.5).then_some(()) }).await;
    let (writer, other) = ("203.0.113.1", "203.0.113.2");

    let paused = Paused::new(replica).await;
    let body = json!({"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"});
    let created = as_client(&app, writer, "/api/v1/users", Some(body)).await;
    assert_eq!(created.status(), 201);
    let ada: Value = created.json().await.unwrap();
    assert_eq!(
        users_listed(&app, writer).await,
        1,
        "the writer reads its write"
    );
    assert_eq!(
        users_listed(&app, other).await,
        0,
        "another client reads the lagging replica"
    );
    let ada_path = format!("/api/v1/users/{}", ada["id"].as_str().unwrap());
    assert_eq!(
        as_client(&app, other, &ada_path, None).await.status(),
        200,
        "the write filled the cache"
    );
    let grace = fetch_text(
        &data,
        "INSERT INTO users (id, email, first_name, last_name) \
         VALUES (gen_random_uuid(), 'grace@example.com', 'Grace', 'Hopper') RETURNING id::text",
        &[],
    )
    .await;
    let grace_path = format!("/api/v1/users/{grace}");
    assert_eq!(
        as_client(&app, other, &grace_path, None).await.status(),
        200,
        "a row the replica lacks is read from the primary"
    );
    assert!(lag(&app).await > 0.0);

    eventually(|| async { (lag(&app).await > MAX_LAG.as_secs_f64()).then_some(()) }).await;
    assert_eq!(
        users_listed(&app, other).await,
        2,
        "past the lag allowed, from the primary"
    );

    drop(paused);
    eventually(|| async { (lag(&app).await < 0.5).then_some(()) }).await;
    assert_eq!(
        users_listed(&app, other).await,
        2,
        "the replica has caught up"
    );
}
