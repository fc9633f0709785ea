//! Reaching the app's database and bus behind its back, as a crashed relay
//! or a slow transaction elsewhere would.

use serde_json::Value;

use super::app::TestApp;
use super::data::TestData;
use super::stack::Stack;
use crate::kafka;

/// Delivers `messages` (bus message JSON) through the app's bus again, as
/// a relay that crashed between publishing and deleting its rows would:
/// as outbox rows on the embedded stack, straight to the topic on Kafka.
pub(crate) async fn replay_messages(app: &TestApp, messages: &[Value]) {
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
pub(crate) enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub(crate) async fn acquire(app: &TestApp, table: &str) -> Self {
        use sqlx::Connection;
        match app.data.database() {
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
            Some(options) => {
                let mut connection = sqlx::PgConnection::connect_with(&options)
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

    pub(crate) async fn release(self) {
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

/// The first column of the first row `sql` returns, as text, on the test's
/// database (`$1`, `$2`… are `params`, bound as text).
pub(crate) async fn fetch_text(data: &TestData, sql: &str, params: &[&str]) -> String {
    use sqlx::Connection;
    match data.database() {
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(data.dir.path().join("highload.db"));
            let mut connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("test opens the app's database");
            let query = params
                .iter()
                .fold(sqlx::query_scalar(sql), |query, param| query.bind(*param));
            query.fetch_one(&mut connection).await.expect(sql)
        }
        Some(options) => {
            let mut connection = sqlx::PgConnection::connect_with(&options)
                .await
                .expect("test opens the app's database");
            let query = params
                .iter()
                .fold(sqlx::query_scalar(sql), |query, param| query.bind(*param));
            query.fetch_one(&mut connection).await.expect(sql)
        }
    }
}
