//! `spawn_app`: the real `Application`, configured as in production but on
//! port 0 and with the test's own data, run in the test's runtime.

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use highload::config::{Config, DatabaseBackend, KafkaConfig, ReadReplica};
use highload::startup::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::data::TestData;
use super::stack::Stack;
use super::wait::eventually;

pub(crate) struct TestApp {
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
            let _ = highload::telemetry::init(&config.log, &config.tracing);
        }
    });
}

/// The configuration of a test app: port 0, the test's own data (see
/// [`TestData`]), defaults otherwise (whatever the environment says).
pub(crate) fn test_config(data: &TestData) -> Config {
    // The real stack's servers go through the same resolution as in
    // production; the test's own database is set below.
    let mut args = vec!["highload".to_owned()];
    if let Some((real, name)) = &data.real {
        let prefix = format!("{name}:");
        args.extend(
            [
                "--redis-url",
                &real.redis_url,
                "--cache-prefix",
                &prefix,
                "--kafka-brokers",
                &real.kafka_brokers,
                "--kafka-topic",
                name,
                "--kafka-group-id",
                name,
                "--kafka-partitions",
                "3",
                "--db-max-connections",
                "10",
            ]
            .map(str::to_owned),
        );
    }
    let mut config = Config::try_parse_from(args).expect("the test configuration parses");
    config.server.server_host = "127.0.0.1".into();
    config.server.server_port = 0;
    config.server.shutdown_timeout = Duration::from_secs(20);
    config.bus.outbox_poll_interval = Duration::from_millis(50);
    config.workers.processing_retry_delay = Duration::from_millis(20);
    match data.database() {
        Some(database) => {
            config.database.backend = DatabaseBackend::Postgres(database.into());
            config.database.read_replica = data.replica().map(|replica| ReadReplica {
                options: replica.into(),
                // DB_READ_MAX_LAG's default.
                max_lag: Duration::from_secs(1),
            });
        }
        None => {
            config.database.backend = DatabaseBackend::Sqlite(data.dir.path().join("highload.db"));
            config.cache.redis = None;
            config.bus.kafka = None;
        }
    }
    config
}

pub(crate) async fn spawn_app(stack: Stack) -> TestApp {
    let data = TestData::new(stack).await;
    spawn_app_with(test_config(&data), data).await
}

/// Starts the app with `config`, keeping `data` alive as long as it runs,
/// and waits until it is ready.
pub(crate) async fn spawn_app_with(config: Config, data: Arc<TestData>) -> TestApp {
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
    /// The SQLite file of an app on the embedded stack.
    pub(crate) fn sqlite_path(&self) -> PathBuf {
        match &self.config.database.backend {
            DatabaseBackend::Sqlite(path) => path.clone(),
            DatabaseBackend::Postgres(_) => panic!("not a SQLite app"),
        }
    }

    fn kafka(&self) -> &KafkaConfig {
        self.config.bus.kafka.as_ref().expect("a Kafka app")
    }

    pub(crate) fn brokers(&self) -> &str {
        &self.kafka().brokers
    }

    pub(crate) fn topic(&self) -> &str {
        &self.kafka().topic
    }

    /// Shuts the app down gracefully and returns how it ended.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.expect("the app task does not panic")
    }

    /// Restarts on the same data: stops this app, starts another with
    /// `change` applied to the same configuration.
    pub(crate) async fn restart(self, change: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = self.config.clone();
        let data = Arc::clone(&self.data);
        config.server.server_port = 0;
        self.stop().await.expect("clean shutdown");
        change(&mut config);
        spawn_app_with(config, data).await
    }
}
