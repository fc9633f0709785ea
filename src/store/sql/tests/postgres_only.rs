//! What the SQL store does about PostgreSQL's own behaviour: a begin that
//! is cancelled midway, a statement that aborts the transaction. Ignored in
//! a plain `cargo test`, like the suite's PostgreSQL tests.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::{Backend, event, user};
use crate::domain::{EventFilter, Page};
use crate::store::postgres::{Pg, PostgresStore};
use crate::store::sql::NamedPool;
use crate::store::{Store, StoreError, Write, Written};

/// Forwards connections to `target`, holding back each chunk the
/// server sends for `delay`: a database whose answers take that long.
fn slow_proxy(target: (String, u16), delay: Duration) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect((target.0.as_str(), target.1)).unwrap();
            let (mut to_server, mut from_server) = (server.try_clone().unwrap(), server);
            let (mut from_client, mut to_client) = (client.try_clone().unwrap(), client);
            std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf) {
                    std::thread::sleep(delay);
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A request cancelled while its transaction begins (its client hung
/// up) must not leave the connection inside that transaction: the next
/// borrower's statements would run in it, keep its locks and vanish
/// with it.
#[tokio::test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
async fn a_begin_cancelled_midway_leaves_no_transaction_open() {
    use std::task::Poll;

    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let options = url.parse::<PgConnectOptions>().unwrap();
    let target = (options.get_host().to_owned(), options.get_port());
    // Answers 20 ms late, so that a begin is still waiting for BEGIN's
    // answer when its caller gives up.
    let port = slow_proxy(target, Duration::from_millis(20));
    // One connection, so that every borrower gets the one a cancelled
    // begin handed back; no ping on checkout, as in the service.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options.host("127.0.0.1").port(port))
        .await
        .expect("PostgreSQL must be running (scripts/dev-services.sh)");
    let named = NamedPool::new("main", pool.clone());
    for round in 0..3 {
        {
            let mut begin = Box::pin(PostgresStore::begin(&named, None));
            // Polled once, then dropped: BEGIN is on its way, its
            // answer not read.
            let waiting =
                std::future::poll_fn(|cx| Poll::Ready(begin.as_mut().poll(cx).is_pending())).await;
            assert!(waiting, "round {round}: begin finished without waiting");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Outside a transaction, a statement's transaction starts with
        // it; inside the leaked one, now() is the time of its BEGIN,
        // 100 ms ago.
        let in_transaction: bool =
            sqlx::query_scalar("SELECT now() < statement_timestamp() - interval '50 ms'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            !in_transaction,
            "round {round}: the connection came back inside the cancelled transaction"
        );
    }
}

/// A statement that fails (PostgreSQL refuses NUL in text, which aborts
/// the transaction) fails its own write alone: the batch runs again one
/// write at a time.
#[tokio::test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
async fn a_failed_statement_fails_its_own_write_alone() {
    let db = Pg::fresh().await;
    let store = db.store();
    let (user, created) = user("nul@example.com");
    let mut broken = event(user.id);
    if let Write::CreateEvent { event, .. } = &mut broken {
        event.data = "a\u{0}b".into();
    }
    let outcomes = store
        .write(&[
            Write::CreateUser {
                user: user.clone(),
                message: created,
            },
            broken,
            event(user.id),
        ])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Ok(Written::Created)), "{outcomes:?}");
    assert!(
        matches!(outcomes[1], Err(StoreError::Other(_))),
        "{outcomes:?}"
    );
    assert!(matches!(outcomes[2], Ok(Written::Created)), "{outcomes:?}");
    let filter = EventFilter {
        user_id: Some(user.id),
        ..EventFilter::default()
    };
    let listed = store.list_events(&filter, Page::default()).await.unwrap();
    assert_eq!(listed.total, 1);
    db.finish().await;
}

/// A database the Go service's latest version created: its `api_keys`
/// table (another shape than ours) is kept as `go_api_keys`, its accounts
/// stay in `auth_users`, and the migrations run to the end.
#[tokio::test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
async fn a_database_of_the_go_services_latest_version_is_taken_over() {
    let (admin, name, options) = super::postgres_database().await;
    let go = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    for statement in [
        "CREATE TABLE api_keys (id UUID PRIMARY KEY, name VARCHAR(50) NOT NULL, \
         key_hash VARCHAR(64) NOT NULL UNIQUE, permissions TEXT[] NOT NULL, \
         is_active BOOLEAN NOT NULL DEFAULT true, created_at TIMESTAMPTZ NOT NULL, \
         expires_at TIMESTAMPTZ)",
        "INSERT INTO api_keys (id, name, key_hash, permissions, created_at) \
         VALUES (gen_random_uuid(), 'go', 'abc', '{read}', now())",
        "CREATE TABLE auth_users (id UUID PRIMARY KEY, email VARCHAR(255) UNIQUE NOT NULL, \
         first_name VARCHAR(100) NOT NULL, last_name VARCHAR(100) NOT NULL, \
         role VARCHAR(20) NOT NULL DEFAULT 'user', is_active BOOLEAN NOT NULL DEFAULT true, \
         password_hash VARCHAR(255) NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
         updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        "INSERT INTO auth_users (id, email, first_name, last_name, role, password_hash) \
         VALUES (gen_random_uuid(), 'admin@example.com', 'A', 'D', 'admin', '$2a$10$x')",
        "CREATE TABLE refresh_tokens (id SERIAL PRIMARY KEY, user_id UUID NOT NULL, \
         token_hash VARCHAR(64) NOT NULL, expires_at TIMESTAMPTZ NOT NULL, \
         created_at TIMESTAMPTZ NOT NULL)",
    ] {
        sqlx::query(statement).execute(&go).await.unwrap();
    }
    let store = PostgresStore::connect_lazy(options.clone(), 2, Duration::from_secs(5), None);
    store
        .migrate()
        .await
        .expect("the migrations run on the Go service's tables");
    // Again, as a restarted replica does.
    store.migrate().await.unwrap();
    let kept: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM go_api_keys), (SELECT COUNT(*) FROM auth_users), \
         (SELECT COUNT(*) FROM information_schema.columns \
          WHERE table_name = 'api_keys' AND column_name = 'shown')",
    )
    .fetch_one(&go)
    .await
    .unwrap();
    assert_eq!(
        kept,
        (1, 1, 1),
        "Go's keys kept aside, its accounts kept, ours created"
    );
    store.close().await;
    go.close().await;
    super::drop_database(&admin, &name).await;
}

/// A database whose `events` has rows (the Go service's, here 5,000 over
/// the last 30 days) is partitioned in place once a retention is set (and
/// not before): every row stays listed and
/// counted, read by id, guarded by its user; and expiry takes the older
/// half with what it counted.
#[tokio::test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
async fn a_populated_events_table_is_partitioned_in_place() {
    let (admin, name, options) = super::postgres_database().await;
    let go = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    for statement in [
        "CREATE TABLE users (id UUID PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE, \
         first_name VARCHAR(100) NOT NULL, last_name VARCHAR(100) NOT NULL, \
         created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        "CREATE TABLE events (id UUID PRIMARY KEY, \
         user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE, \
         type VARCHAR(100) NOT NULL, data TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        "INSERT INTO users (id, email, first_name, last_name) \
         SELECT gen_random_uuid(), 'u' || g || '@example.com', 'A', 'B' FROM generate_series(1, 2) g",
        "INSERT INTO events (id, user_id, type, data, created_at) \
         SELECT gen_random_uuid(), (array_agg(u.id))[1 + g % 2], 't' || (g % 3), '{}', \
                now() - make_interval(mins => g * 8) \
         FROM generate_series(1, 5000) g, users u GROUP BY g",
    ] {
        sqlx::query(statement).execute(&go).await.unwrap();
    }
    let newest: (uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("SELECT id, user_id FROM events ORDER BY created_at DESC, id DESC LIMIT 1")
            .fetch_one(&go)
            .await
            .unwrap();
    // Without a retention it stays one table.
    let plain = PostgresStore::connect_lazy(options.clone(), 2, Duration::from_secs(5), None);
    plain.migrate().await.unwrap();
    plain.close().await;
    let kind = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT relkind::text FROM pg_class WHERE relname = 'events'",
        )
        .fetch_one(&go)
        .await
        .unwrap()
    };
    assert_eq!(kind().await, "r");
    let keep = Some(Duration::from_secs(30 * 86_400));
    let store = PostgresStore::connect_lazy(options.clone(), 2, Duration::from_secs(5), keep);
    store.migrate().await.unwrap();
    // Again, as a restarted replica does; and past the record of a
    // development version that partitioned as migration 11.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (11, 'events partitioned by time', true, '\\x00', 0)",
    )
    .execute(&go)
    .await
    .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(kind().await, "p", "events is partitioned");
    let all = store
        .list_events(&EventFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(all.total, 5000);
    assert_eq!(all.items[0].id, newest.0, "newest first, as before");
    assert!(store.get_event(newest.0).await.unwrap().is_some());
    let by_user = EventFilter {
        user_id: Some(newest.1),
        event_type: None,
    };
    assert_eq!(
        store
            .list_events(&by_user, Page::default())
            .await
            .unwrap()
            .total,
        2500
    );
    let stranger = uuid::Uuid::now_v7();
    let refused = store.write_one(event(stranger)).await;
    assert!(
        matches!(refused, Err(StoreError::UserNotFound)),
        "{refused:?}"
    );
    let written = store.write_one(event(newest.1)).await;
    assert!(matches!(written, Ok(Written::Created)), "{written:?}");

    let before =
        chrono::Utc::now() - chrono::Duration::minutes(8 * 2500) - chrono::Duration::seconds(30);
    let (removed, failed) = crate::store::expire_events(&store, before, 1000).await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(
        removed, 2500,
        "events 2,501 to 5,000 are older than the cut"
    );
    let left = store
        .list_events(&EventFilter::default(), Page::default())
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&go)
        .await
        .unwrap();
    assert_eq!(
        (left.total, rows),
        (2501, 2501),
        "the younger half and the new one"
    );
    store.close().await;
    go.close().await;
    super::drop_database(&admin, &name).await;
}
