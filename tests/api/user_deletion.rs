//! Deleting a user deletes their events: from every read as soon as the
//! DELETE is answered, and on SQLite without holding up other writes while
//! the rows go.

use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{Stack, TestApp, spawn_app};

crate::stack_tests!(a_deleted_users_events_are_gone_from_every_read_once_the_delete_is_answered);

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_writes_commit_while_a_deleted_users_many_events_are_being_removed() {
        super::other_writes_commit_while_a_deleted_users_many_events_are_being_removed().await;
    }
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// Every id of a list, walked by cursor, and the total it reported.
async fn list(app: &TestApp, path: &str) -> (Vec<String>, u64) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("{path}{separator}limit=3&cursor={cursor}"),
            None => format!("{path}{separator}limit=3"),
        };
        let body = get_json(app, &query).await;
        ids.extend(
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (ids, body["total"].as_u64().unwrap()),
        }
    }
}

async fn a_deleted_users_events_are_gone_from_every_read_once_the_delete_is_answered(stack: Stack) {
    let app = &spawn_app(stack).await;
    let (gone, kept) = (app.create_user().await, app.create_user().await);
    let (gone, kept) = (gone["id"].as_str().unwrap(), kept["id"].as_str().unwrap());
    let posts = (0..5)
        .map(|i| (gone, if i < 3 { "click" } else { "view" }))
        .chain((0..3).map(|i| (kept, if i < 1 { "click" } else { "view" })));
    let events: Vec<Value> = join_all(posts.map(|(user, kind)| app.create_event(user, kind))).await;
    let (theirs, others): (Vec<&Value>, Vec<&Value>) =
        events.iter().partition(|e| e["user_id"] == gone);
    // Read once, so that the reads after the delete would find them cached.
    for event in &theirs {
        get_json(
            app,
            &format!("/api/v1/events/{}", event["id"].as_str().unwrap()),
        )
        .await;
    }

    assert_eq!(
        app.delete(&format!("/api/v1/users/{gone}")).await.status(),
        204
    );

    for event in &theirs {
        let path = format!("/api/v1/events/{}", event["id"].as_str().unwrap());
        assert_eq!(app.get(&path).await.status(), 404, "{path}");
    }
    let mut others: Vec<String> = others
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    others.sort();
    let (mut all, total) = list(app, "/api/v1/events").await;
    all.sort();
    assert_eq!((all, total), (others, 3));
    assert_eq!(
        list(app, &format!("/api/v1/events?user_id={gone}")).await,
        (vec![], 0)
    );
    let (gone_clicks, total) =
        list(app, &format!("/api/v1/events?user_id={gone}&type=click")).await;
    assert_eq!((gone_clicks.len(), total), (0, 0));
    let (clicks, total) = list(app, "/api/v1/events?type=click").await;
    assert_eq!((clicks.len(), total), (1, 1));
    let (views, total) = list(app, "/api/v1/events?type=view").await;
    assert_eq!((views.len(), total), (2, 2));
    assert_eq!(
        app.get(&format!("/api/v1/users/{gone}")).await.status(),
        404
    );
    let users = get_json(app, "/api/v1/users").await;
    assert_eq!(users["total"], 1);
}

/// How many events the seeded user gets: many transactions' worth.
const MANY: u32 = 20_000;

async fn other_writes_commit_while_a_deleted_users_many_events_are_being_removed() {
    let app = &spawn_app(Stack::Embedded).await;
    let user = app.create_user().await;
    let id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(app.sqlite_path())
        .busy_timeout(std::time::Duration::from_secs(30));
    let db = sqlx::SqlitePool::connect_with(options).await.unwrap();

    // Many events, counted as the store counts them.
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
         INSERT INTO events (id, user_id, type, data, created_at) \
         SELECT randomblob(16), ?, 'bulk', '{}', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM n",
    )
    .bind(MANY)
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    for (user, kind) in [
        (uuid::Uuid::nil(), ""),
        (id, ""),
        (uuid::Uuid::nil(), "bulk"),
        (id, "bulk"),
    ] {
        sqlx::query(
            "INSERT INTO row_counts (scope, user_id, type, n) VALUES ('events', ?, ?, ?) \
             ON CONFLICT (scope, user_id, type) DO UPDATE SET n = n + excluded.n",
        )
        .bind(user)
        .bind(kind)
        .bind(i64::from(MANY))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    // Records, as each user is inserted, how many of the seeded user's
    // events are still stored.
    sqlx::query("CREATE TABLE probe (remaining INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE TRIGGER probe_users AFTER INSERT ON users BEGIN \
         INSERT INTO probe SELECT COUNT(*) FROM events WHERE user_id = X'{}'; END",
        id.simple()
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(get_json(app, "/api/v1/events").await["total"], MANY);

    assert_eq!(
        app.delete(&format!("/api/v1/users/{id}")).await.status(),
        204
    );
    // A write right after: it commits between two of the deletion's
    // transactions, not after all of them.
    app.create_user().await;
    let remaining: i64 = sqlx::query_scalar("SELECT remaining FROM probe")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(
        remaining > 0,
        "the new user was inserted only once every event of the deleted one was gone"
    );
    // Meanwhile no read shows them.
    let events = get_json(app, "/api/v1/events?limit=100").await;
    assert_eq!(events["total"], 0);
    assert_eq!(events["events"], Value::Array(vec![]));
    let theirs = get_json(app, &format!("/api/v1/events?user_id={id}&type=bulk")).await;
    assert_eq!(theirs["events"], Value::Array(vec![]));

    // And the rows do go, all of them.
    crate::helpers::eventually(|| async {
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM deleted_users)",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        (left == 0).then_some(())
    })
    .await;
    db.close().await;
}
