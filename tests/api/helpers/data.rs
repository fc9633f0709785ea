//! A test's own data, so that tests run in parallel without seeing each
//! other: a directory (SQLite), or on the real stack a database, a cache
//! key prefix and a topic of its own.

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;

use super::stack::{RealStack, Stack};

/// What one test's apps keep their data in. The database and the topic
/// (with its dead-letter twin) are dropped with the last app using them:
/// a broker that keeps every test's topics grows slower with each run.
pub(crate) struct TestData {
    pub dir: tempfile::TempDir,
    pub stack: Stack,
    /// Real stack: where, and this test's database / prefix / topic name.
    pub real: Option<(RealStack, String)>,
}

impl TestData {
    pub(crate) async fn new(stack: Stack) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = match stack {
            Stack::Embedded => None,
            Stack::Real => {
                let real = RealStack::get().await.clone();
                let name = format!("hl_test_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect_with(real.database.clone())
                    .await
                    .expect("PostgreSQL answers");
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

    /// The test's own database on the real stack.
    pub(crate) fn database(&self) -> Option<PgConnectOptions> {
        let (real, name) = self.real.as_ref()?;
        Some(real.database.clone().database(name))
    }

    /// The test's own database on the replica, when the real stack has one
    /// (`TEST_DATABASE_READ_URL`).
    pub(crate) fn replica(&self) -> Option<PgConnectOptions> {
        let (real, name) = self.real.as_ref()?;
        Some(real.replica.clone()?.database(name))
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
                if let Ok(pool) = sqlx::PgPool::connect_with(real.database).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&drop).execute(&pool).await;
                    pool.close().await;
                }
                crate::kafka::delete_topics(&real.kafka_brokers, &[&name, &format!("{name}.dlq")])
                    .await;
            });
        })
        .join();
    }
}
