//! `spawn_app`: the real `Application` on port 0 with its own database, and
//! the HTTP helpers the tests share.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::kafka;
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
    /// PostgreSQL, Redis and Kafka (see [`RealStack`]).
    Real,
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
        $crate::real_stack_tests!($($name),+);
    };
}

/// Defines each listed `async fn name(stack: Stack)` as a test on the real
/// stack only: skipped (saying so) when its services are not running,
/// failed instead when `CI=true`.
#[macro_export]
macro_rules! real_stack_tests {
    ($($name:ident),+ $(,)?) => {
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::RealStack::get(stringify!($name)).await.is_some() {
                        super::$name($crate::helpers::Stack::Real).await;
                    }
                }
            )+
        }
    };
}

/// Where the real stack's services are: `TEST_DATABASE_URL` (a database
/// the tests may create databases from), `TEST_REDIS_URL`,
/// `TEST_KAFKA_BROKERS`; the defaults are what `scripts/dev-services.sh`
/// starts.
#[derive(Debug, Clone)]
pub struct RealStack {
    pub database_url: String,
    pub redis_url: String,
    pub kafka_brokers: String,
}

impl RealStack {
    fn from_env() -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        Self {
            database_url: var(
                "TEST_DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/postgres",
            ),
            redis_url: var("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            kafka_brokers: var("TEST_KAFKA_BROKERS", "127.0.0.1:9092"),
        }
    }

    /// The real stack if its services answer. Otherwise the test is
    /// skipped with a message, or fails when `CI=true`: CI must never pass
    /// by skipping.
    pub async fn get(test: &str) -> Option<&'static RealStack> {
        static STACK: tokio::sync::OnceCell<Result<RealStack, String>> =
            tokio::sync::OnceCell::const_new();
        let checked = STACK
            .get_or_init(|| async {
                let stack = RealStack::from_env();
                stack.check().await.map(|()| stack)
            })
            .await;
        match checked {
            Ok(stack) => Some(stack),
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!(
                    "CI=true and the real stack is unavailable: {why} (run scripts/dev-services.sh)"
                )
            }
            Err(why) => {
                eprintln!("skipping {test} on the real stack: {why} (run scripts/dev-services.sh)");
                None
            }
        }
    }

    async fn check(&self) -> Result<(), String> {
        let timeout = Duration::from_secs(5);
        let pg = async {
            let pool = sqlx::PgPool::connect(&self.database_url).await?;
            sqlx::query("SELECT 1").execute(&pool).await?;
            Ok::<_, sqlx::Error>(())
        };
        tokio::time::timeout(timeout, pg)
            .await
            .map_err(|_| "PostgreSQL did not answer".to_string())?
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        let redis = async {
            let client = redis::Client::open(self.redis_url.as_str())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        tokio::time::timeout(timeout, redis)
            .await
            .map_err(|_| "Redis did not answer".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        kafka::metadata(&self.kafka_brokers, None)
            .await
            .map_err(|e| format!("Kafka at {}: {e}", self.kafka_brokers))
    }
}

/// What one test's apps keep their data in: a directory (SQLite), or on
/// the real stack a database, a cache key prefix and a topic of its own.
/// The database is dropped with the last app using it. Topics are left in
/// place: the app may still be producing when this is dropped, and tansu
/// 0.6 crashes when a topic is deleted under an idempotent producer.
pub struct TestData {
    pub dir: tempfile::TempDir,
    pub stack: Stack,
    /// Real stack: where, and this test's database / prefix / topic name.
    pub real: Option<(RealStack, String)>,
}

impl TestData {
    pub async fn new(stack: Stack) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = match stack {
            Stack::Embedded => None,
            Stack::Real => {
                let real = RealStack::get("setup")
                    .await
                    .expect("real stack checked")
                    .clone();
                let name = format!("hl_test_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&real.database_url).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await
                    .expect("test database created");
                pool.close().await;
                Some((real, name))
            }
        };
        Arc::new(Self { dir, stack, real })
    }

    /// The test's own database URL on the real stack.
    pub fn database_url(&self) -> Option<String> {
        let (real, name) = self.real.as_ref()?;
        let base = real
            .database_url
            .rsplit_once('/')
            .expect("URL has a path")
            .0;
        Some(format!("{base}/{name}"))
    }
}

impl Drop for TestData {
    fn drop(&mut self) {
        let Some((real, name)) = self.real.take() else {
            return;
        };
        // Drop runs outside any runtime we may block on: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&real.database_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&drop).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub config: Config,
    /// Cancelling it starts the app's graceful shutdown.
    pub shutdown: CancellationToken,
    /// The app's metrics, read directly.
    pub metrics: Arc<highload::metrics::Metrics>,
    handle: JoinHandle<anyhow::Result<()>>,
    /// Keeps the test's data alive across restarts.
    pub data: Arc<TestData>,
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

/// The configuration of a test app: port 0, the test's own data (see
/// [`TestData`]), defaults otherwise (whatever the environment says).
pub fn test_config(data: &TestData) -> Config {
    let mut config = Config::try_parse_from(["highload"]).expect("defaults parse");
    config.server.server_host = "127.0.0.1".into();
    config.server.server_port = 0;
    config.server.shutdown_timeout = Duration::from_secs(20);
    config.database.database_url = None;
    config.database.db_host = None;
    config.database.sqlite_path = data.dir.path().join("highload.db");
    config.cache.redis_url = None;
    config.cache.redis_host = None;
    config.bus.kafka_brokers = None;
    config.bus.outbox_poll_interval = Duration::from_millis(50);
    config.workers.processing_retry_delay = Duration::from_millis(20);
    if let Some((real, name)) = &data.real {
        config.database.database_url = data.database_url();
        config.database.db_max_connections = 10;
        config.cache.redis_url = Some(real.redis_url.clone());
        config.cache.cache_prefix = format!("{name}:");
        config.bus.kafka_brokers = Some(real.kafka_brokers.clone());
        config.bus.kafka_topic = name.clone();
        config.bus.kafka_group_id = name.clone();
        config.bus.kafka_partitions = 3;
    }
    config
}

pub async fn spawn_app(stack: Stack) -> TestApp {
    let data = TestData::new(stack).await;
    spawn_app_with(test_config(&data), data).await
}

/// Starts the app with `config`, keeping `data` alive as long as it runs,
/// and waits until it is ready.
pub async fn spawn_app_with(config: Config, data: Arc<TestData>) -> TestApp {
    init_logging();
    let app = Application::build(config.clone())
        .await
        .expect("the app builds");
    let port = app.port();
    let shutdown = app.shutdown_token();
    let metrics = app.metrics();
    let handle = tokio::spawn(app.run_until_stopped());
    let app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::new(),
        config,
        shutdown,
        metrics,
        handle,
        data,
    };
    eventually(|| async { (app.get("/health/ready").await.status() == 200).then_some(()) }).await;
    app
}

impl TestApp {
    pub fn sqlite_path(&self) -> PathBuf {
        self.config.database.sqlite_path.clone()
    }

    pub fn brokers(&self) -> &str {
        self.config
            .bus
            .kafka_brokers
            .as_deref()
            .expect("a Kafka app")
    }

    pub fn topic(&self) -> &str {
        &self.config.bus.kafka_topic
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
        config.server.server_port = 0;
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

    /// Polls the user's activity until `done` holds (or fails after 30 s).
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

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `probe` until it returns `Some`, failing the test after 30 s.
pub async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within 30 s");
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

/// Delivers `messages` (bus message JSON) through the app's bus again, as
/// a relay that crashed between publishing and deleting its rows would:
/// as outbox rows on the embedded stack, straight to the topic on Kafka.
pub async fn replay_messages(app: &TestApp, messages: &[Value]) {
    match app.data.stack {
        Stack::Embedded => {
            let pool = open_sqlite(app).await;
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
            pool.close().await;
        }
        Stack::Real => {
            let records: Vec<_> = messages
                .iter()
                .map(|m| (m["user_id"].as_str().unwrap().to_owned(), m.to_string()))
                .collect();
            kafka::produce(app.brokers(), app.topic(), &records).await;
        }
    }
}

async fn open_sqlite(app: &TestApp) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(app.sqlite_path());
    sqlx::SqlitePool::connect_with(options)
        .await
        .expect("test opens the app's database")
}

/// Holds a write lock from outside the app, so that the app's writes to
/// `table` wait (in flight) until it is released: the whole database on
/// SQLite, the table on PostgreSQL.
pub enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub async fn acquire(app: &TestApp, table: &str) -> Self {
        use sqlx::Connection;
        match app.data.database_url() {
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(app.sqlite_path());
                let mut connection = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("test opens the app's database");
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut connection)
                    .await
                    .expect("write lock taken");
                Self::Sqlite(connection)
            }
            Some(url) => {
                let mut connection = sqlx::PgConnection::connect(&url)
                    .await
                    .expect("test opens the app's database");
                sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
                // Readers pass; writers of the table wait.
                sqlx::query(&format!("LOCK TABLE {table} IN EXCLUSIVE MODE"))
                    .execute(&mut connection)
                    .await
                    .expect("write lock taken");
                Self::Postgres(connection)
            }
        }
    }

    pub async fn release(self) {
        match self {
            Self::Sqlite(mut connection) => {
                sqlx::query("COMMIT")
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
            Self::Postgres(mut connection) => {
                sqlx::query("COMMIT")
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
        }
    }
}
