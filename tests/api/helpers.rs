//! `spawn_app`: the real `Application` on port 0 with its own database, and
//! the HTTP helpers the tests share.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use clap::Parser;
use highload::config::Config;
use highload::startup::Application;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Which backends the app under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// SQLite file, in-process cache and bus.
    Embedded,
}

/// Defines each listed `async fn name(stack: Stack)` as a test per stack,
/// so that one suite runs against every backend.
#[macro_export]
macro_rules! stack_tests {
    ($($name:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Stack::Embedded).await;
                }
            )+
        }
    };
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub config: Config,
    /// Cancelling it starts the app's graceful shutdown.
    pub shutdown: CancellationToken,
    pub in_flight: Arc<AtomicUsize>,
    handle: JoinHandle<anyhow::Result<()>>,
    /// Keeps the data directory alive across restarts.
    pub data: Arc<tempfile::TempDir>,
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // TEST_LOG=debug (or any LOG_LEVEL value) shows the app's logs.
        if let Ok(level) = std::env::var("TEST_LOG") {
            let config = Config::try_parse_from(["highload", "--log-level", &level])
                .expect("TEST_LOG must be a valid LOG_LEVEL");
            let _ = highload::telemetry::init(&config.log);
        }
    });
}

/// The configuration of a test app: port 0, its own SQLite file under
/// `data`, defaults otherwise (whatever the environment says).
pub fn test_config(stack: Stack, data: &tempfile::TempDir) -> Config {
    let mut config = Config::try_parse_from(["highload"]).expect("defaults parse");
    config.server.server_host = "127.0.0.1".into();
    config.server.server_port = 0;
    config.server.shutdown_timeout = Duration::from_secs(20);
    config.database.database_url = None;
    config.database.db_host = None;
    config.database.sqlite_path = data.path().join("highload.db");
    config.cache.redis_url = None;
    config.cache.redis_host = None;
    config.bus.kafka_brokers = None;
    config.bus.outbox_poll_interval = Duration::from_millis(50);
    config.workers.processing_retry_delay = Duration::from_millis(20);
    match stack {
        Stack::Embedded => {}
    }
    config
}

pub async fn spawn_app(stack: Stack) -> TestApp {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    spawn_app_with(test_config(stack, &data), data).await
}

/// Starts the app with `config`, keeping `data` alive as long as it runs.
pub async fn spawn_app_with(config: Config, data: Arc<tempfile::TempDir>) -> TestApp {
    init_logging();
    let app = Application::build(config.clone())
        .await
        .expect("the app builds");
    let port = app.port();
    let shutdown = app.shutdown_token();
    let in_flight = app.in_flight();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::new(),
        config,
        shutdown,
        in_flight,
        handle,
        data,
    }
}

impl TestApp {
    pub fn sqlite_path(&self) -> PathBuf {
        self.config.database.sqlite_path.clone()
    }

    /// Shuts the app down gracefully and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.expect("the app task does not panic")
    }

    /// Restarts on the same data: stops this app, starts another with
    /// `change` applied to the same configuration.
    pub async fn restart(self, change: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = self.config.clone();
        let data = Arc::clone(&self.data);
        self.stop().await.expect("clean shutdown");
        change(&mut config);
        spawn_app_with(config, data).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path, None).await
    }

    /// Creates a user with a unique email and returns its JSON.
    pub async fn create_user(&self) -> Value {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let email = format!("user{n}-{}@example.com", uuid::Uuid::new_v4().simple());
        let response = self
            .post(
                "/api/v1/users",
                &json!({ "email": email, "first_name": "Ada", "last_name": "Lovelace" }),
            )
            .await;
        assert_eq!(response.status(), 201, "creating a user");
        response.json().await.expect("user JSON")
    }

    /// Posts an event and returns its JSON.
    pub async fn create_event(&self, user_id: &str, event_type: &str) -> Value {
        let response = self
            .post(
                "/api/v1/events",
                &json!({ "user_id": user_id, "type": event_type, "data": "{\"page\":\"/\"}" }),
            )
            .await;
        assert_eq!(response.status(), 201, "creating an event");
        response.json().await.expect("event JSON")
    }

    /// Polls the user's activity until `done` holds (or fails after 20 s).
    pub async fn wait_for_activity(&self, user_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/users/{user_id}/activity");
        eventually(|| async {
            let response = self.get(&path).await;
            assert_eq!(response.status(), 200);
            let activity: Value = response.json().await.unwrap();
            done(&activity).then_some(activity)
        })
        .await
    }
}

/// Polls `probe` until it returns `Some`, failing the test after 20 s.
pub async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within 20 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts an error response: status, problem content type, the `error`
/// message, `status` member, and (if given) the `field` named.
pub async fn assert_problem(response: Response, status: u16, field: Option<&str>) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem JSON");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(body["type"].as_str().is_some(), "{body}");
    assert_eq!(body["status"], status, "{body}");
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{body}");
    }
    body
}

/// Delivers `messages` (bus message JSON) again through the app's bus, as a
/// relay that crashed between publishing and deleting its rows would, and
/// waits until the app has consumed them.
pub async fn replay_messages(app: &TestApp, messages: &[Value]) {
    use sqlx::sqlite::SqliteConnectOptions;
    let options = SqliteConnectOptions::new().filename(app.sqlite_path());
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("test opens the app's database");
    for message in messages {
        sqlx::query(
            "INSERT INTO outbox (message_id, key, payload, created_at) \
             VALUES (?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        )
        .bind(uuid::Uuid::parse_str(message["id"].as_str().unwrap()).unwrap())
        .bind(message["user_id"].as_str().unwrap())
        .bind(message.to_string())
        .execute(&pool)
        .await
        .expect("outbox row inserted");
    }
    // Rows leave the embedded outbox only once processed.
    eventually(|| async {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    pool.close().await;
}

/// Holds the database's write lock from outside the app, so that the app's
/// writes wait (in flight) until it is released.
pub struct WriteLock {
    connection: sqlx::SqliteConnection,
}

impl WriteLock {
    pub async fn acquire(app: &TestApp) -> Self {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(app.sqlite_path());
        let mut connection = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("test opens the app's database");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut connection)
            .await
            .expect("write lock taken");
        Self { connection }
    }

    pub async fn release(mut self) {
        sqlx::query("COMMIT")
            .execute(&mut self.connection)
            .await
            .expect("write lock released");
    }
}
