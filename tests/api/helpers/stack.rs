//! The two stacks a suite runs on, and the real stack's services.
//!
//! Real-stack tests are `#[ignore]`d, so that `cargo test` on a machine
//! without PostgreSQL, Redis and Kafka lists them as ignored (with a count)
//! instead of reporting them as passed. `cargo test -- --include-ignored`
//! runs them; then a service that does not answer fails them, naming the
//! service: a real-stack test that did not run is never counted as passed.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::kafka;

/// Which backends the app under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stack {
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
/// stack only: ignored unless asked for (`--include-ignored`), and failed,
/// not skipped, when asked for and a service does not answer.
#[macro_export]
macro_rules! real_stack_tests {
    ($($name:ident),+ $(,)?) => {
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL, Redis and Kafka: scripts/dev-services.sh, \
                            then cargo test -- --include-ignored"]
                async fn $name() {
                    $crate::helpers::RealStack::get().await;
                    super::$name($crate::helpers::Stack::Real).await;
                }
            )+
        }
    };
}

/// Where the real stack's services are: `TEST_DATABASE_URL` (a database
/// the tests may create databases from), `TEST_DATABASE_READ_URL` (its
/// streaming replica, which the apps read from; empty: none),
/// `TEST_REDIS_URL`, `TEST_KAFKA_BROKERS`; the defaults are what
/// `scripts/dev-services.sh` starts.
#[derive(Debug, Clone)]
pub(crate) struct RealStack {
    /// The database the tests create theirs from (and drop them from).
    pub database: PgConnectOptions,
    /// `TEST_DATABASE_READ_URL`: a streaming replica of `database`; each
    /// test's app reads from its copy of the test's database.
    pub replica: Option<PgConnectOptions>,
    pub redis_url: String,
    pub kafka_brokers: String,
}

/// How long each service has to answer the check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl RealStack {
    fn from_env() -> Result<Self, String> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        let database_url = var(
            "TEST_DATABASE_URL",
            "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        );
        Ok(Self {
            database: PgConnectOptions::from_str(&database_url)
                .map_err(|e| format!("TEST_DATABASE_URL is not a PostgreSQL URL: {e}"))?,
            // Set empty: no replica.
            replica: match var(
                "TEST_DATABASE_READ_URL",
                "postgres://postgres:postgres@127.0.0.1:5433/postgres",
            ) {
                url if url.is_empty() => None,
                url => {
                    Some(PgConnectOptions::from_str(&url).map_err(|e| {
                        format!("TEST_DATABASE_READ_URL is not a PostgreSQL URL: {e}")
                    })?)
                }
            },
            redis_url: var("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            kafka_brokers: var("TEST_KAFKA_BROKERS", "127.0.0.1:9092"),
        })
    }

    /// The real stack, checked once per run. Fails the test, naming every
    /// service that does not answer, when the stack is not all there.
    pub(crate) async fn get() -> &'static RealStack {
        static STACK: tokio::sync::OnceCell<Result<RealStack, String>> =
            tokio::sync::OnceCell::const_new();
        let checked = STACK
            .get_or_init(|| async {
                let stack = RealStack::from_env()?;
                stack.check().await.map(|()| stack)
            })
            .await;
        match checked {
            Ok(stack) => stack,
            Err(why) => panic!(
                "the real stack is unavailable: {why}. Start it with scripts/dev-services.sh \
                 (or point TEST_DATABASE_URL, TEST_DATABASE_READ_URL, TEST_REDIS_URL, \
                 TEST_KAFKA_BROKERS at running services); a plain `cargo test` leaves the \
                 real-stack tests ignored"
            ),
        }
    }

    /// Asks each service to answer, all at once; the error names every one
    /// that did not.
    async fn check(&self) -> Result<(), String> {
        let answers = |options: PgConnectOptions, variable: &'static str| async move {
            let at = format!(
                "PostgreSQL at {}:{} ({variable})",
                options.get_host(),
                options.get_port()
            );
            let pg = async {
                let pool = sqlx::PgPool::connect_with(options).await?;
                sqlx::query("SELECT 1").execute(&pool).await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            };
            match tokio::time::timeout(CHECK_TIMEOUT, pg).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{at}: {e}")),
                Err(_) => Err(format!("{at} did not answer within {CHECK_TIMEOUT:?}")),
            }
        };
        let pg = async {
            answers(self.database.clone(), "TEST_DATABASE_URL").await?;
            match &self.replica {
                Some(replica) => answers(replica.clone(), "TEST_DATABASE_READ_URL").await,
                None => Ok(()),
            }
        };
        let redis = async {
            let client = redis::Client::open(self.redis_url.as_str())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        let redis = async {
            let at = format!("Redis at {} (TEST_REDIS_URL)", self.redis_url);
            match tokio::time::timeout(CHECK_TIMEOUT, redis).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("{at}: {e}")),
                Err(_) => Err(format!("{at} did not answer within {CHECK_TIMEOUT:?}")),
            }
        };
        let kafka = async {
            kafka::metadata(&self.kafka_brokers, None)
                .await
                .map_err(|e| format!("Kafka at {} (TEST_KAFKA_BROKERS): {e}", self.kafka_brokers))
        };
        let (pg, redis, kafka) = tokio::join!(pg, redis, kafka);
        let missing: Vec<String> = [pg, redis, kafka]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }
}
