//! Keyset cursors on the list endpoints: a walk by `next_cursor` returns
//! every row once, in the list's order, whatever is inserted meanwhile;
//! a cursor that was not handed out for that list is a 400.

use futures_util::future::join_all;
use serde_json::Value;

use std::sync::Arc;

use crate::helpers::{
    Stack, TestApp, TestData, assert_problem, spawn_app, spawn_app_with, test_config,
};

crate::stack_tests!(
    walking_users_by_cursor_returns_every_user_once_newest_first,
    walking_events_by_cursor_returns_every_event_once_under_each_filter,
    a_cursor_walk_neither_repeats_nor_skips_older_rows_when_rows_are_inserted,
    a_malformed_changed_or_misplaced_cursor_is_a_400_naming_it,
    a_forged_cursor_is_a_400_whatever_its_time,
    replicas_of_one_database_read_each_others_cursors,
);

/// A cursor as anybody can forge one (its checksum is FNV-1a, no secret):
/// version 1, `micros` since the epoch, a nil id, for the list `list`.
fn forged_cursor(list: &str, micros: i64) -> String {
    let mut bytes = vec![1u8];
    bytes.extend(micros.to_be_bytes());
    bytes.extend([0u8; 16]);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in list.as_bytes().iter().chain(&[0]).chain(&bytes) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    bytes.extend(hash.to_be_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Found by a hostile client: a cursor dated before 4713 BC passed the
/// checksum and PostgreSQL refused the query ("timestamp out of range"),
/// a 500 and an ERROR line per request. Cursors now carry a keyed MAC: a
/// forged one is refused whatever its time.
async fn a_forged_cursor_is_a_400_whatever_its_time(stack: Stack) {
    let app = &spawn_app(stack).await;
    app.create_user().await;
    // 5000 BC, and the far future.
    for micros in [-219_900_000_000_000_000, 9_000_000_000_000_000_000] {
        for (path, list) in [
            ("/api/v1/users", "users"),
            ("/api/v1/events", "events user_id= type="),
        ] {
            let url = format!("{path}?cursor={}", forged_cursor(list, micros));
            assert_problem(app.get(&url).await, 400, Some("cursor")).await;
        }
    }
    // A time a row can have passed the old checksum; no forged cursor
    // passes the MAC.
    let forged = format!(
        "/api/v1/users?cursor={}",
        forged_cursor("users", 1_700_000_000_000_000)
    );
    assert_problem(app.get(&forged).await, 400, Some("cursor")).await;
}

/// The next page's cursor of the users' list, two per page.
async fn first_cursor(app: &TestApp) -> String {
    let page: Value = app.get("/api/v1/users?limit=2").await.json().await.unwrap();
    page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned()
}

async fn replicas_of_one_database_read_each_others_cursors(stack: Stack) {
    let data = TestData::new(stack).await;
    let one = spawn_app_with(test_config(&data), Arc::clone(&data)).await;
    for _ in 0..3 {
        one.create_user().await;
    }
    let cursor = first_cursor(&one).await;
    // Another replica, and this one restarted: the key is the database's.
    let two = spawn_app_with(test_config(&data), Arc::clone(&data)).await;
    let next = format!("/api/v1/users?limit=2&cursor={cursor}");
    assert_eq!(two.get(&next).await.status(), 200);
    let one = one.restart(|_| {}).await;
    assert_eq!(one.get(&next).await.status(), 200);

    // CURSOR_SECRET set alike on replicas: theirs, not the database's.
    let mut config = test_config(&data);
    config.server.cursor_secret = Some("a shared secret of at least 32 bytes".into());
    let three = spawn_app_with(config.clone(), Arc::clone(&data)).await;
    assert_problem(three.get(&next).await, 400, Some("cursor")).await;
    let theirs = first_cursor(&three).await;
    let four = spawn_app_with(config, Arc::clone(&data)).await;
    let next = format!("/api/v1/users?limit=2&cursor={theirs}");
    assert_eq!(four.get(&next).await.status(), 200);
    assert_problem(two.get(&next).await, 400, Some("cursor")).await;
}

/// `path` with `query` appended.
fn with_query(path: &str, query: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{query}")
}

/// One page: its items' ids and its `next_cursor`.
async fn page(app: &TestApp, path: &str, field: &str) -> (Vec<String>, Option<String>) {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let body: Value = response.json().await.unwrap();
    let ids = body[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect();
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(cursor) => Some(cursor.clone()),
        other => panic!("next_cursor is {other}"),
    };
    (ids, next)
}

/// Every id of a list, following `next_cursor` from the first page; the
/// number of pages it took.
async fn walk(app: &TestApp, path: &str, field: &str, limit: u32) -> (Vec<String>, usize) {
    let (mut ids, mut next) = page(app, &with_query(path, &format!("limit={limit}")), field).await;
    let mut pages = 1;
    while let Some(cursor) = next {
        let (more, after) = page(
            app,
            &with_query(path, &format!("limit={limit}&cursor={cursor}")),
            field,
        )
        .await;
        assert!(!more.is_empty(), "{path}: a cursor led to an empty page");
        ids.extend(more);
        next = after;
        pages += 1;
    }
    (ids, pages)
}

/// Every item of a list, in order, as one page of `limit=100` shows it
/// (enough for these tests), and the list's total.
async fn everything(app: &TestApp, path: &str, field: &str) -> (Vec<Value>, u64) {
    let body: Value = app
        .get(&with_query(path, "limit=100"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["next_cursor"],
        Value::Null,
        "{path}: one page holds all"
    );
    (
        body[field].as_array().unwrap().clone(),
        body["total"].as_u64().unwrap(),
    )
}

/// Asserts `items` run newest first: by `created_at`, then `id`, both
/// descending.
fn assert_newest_first(items: &[Value]) {
    let keys: Vec<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> = items
        .iter()
        .map(|item| {
            (
                item["created_at"].as_str().unwrap().parse().unwrap(),
                item["id"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert!(
        keys.windows(2).all(|pair| pair[0] > pair[1]),
        "not newest first: {keys:?}"
    );
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn walking_users_by_cursor_returns_every_user_once_newest_first(stack: Stack) {
    let app = &spawn_app(stack).await;
    // Concurrent creates: some share a batch, and maybe a timestamp.
    join_all((0..23).map(|_| app.create_user())).await;
    let (all, total) = everything(app, "/api/v1/users", "users").await;
    assert_eq!(total, 23);
    assert_newest_first(&all);

    for limit in [1, 5, 23, 100] {
        let (ids, pages) = walk(app, "/api/v1/users", "users", limit).await;
        assert_eq!(ids, ids_of(&all), "limit {limit}");
        assert_eq!(pages, 23usize.div_ceil(limit as usize), "limit {limit}");
    }
    // Page numbers keep working, and hand out a cursor too.
    let body: Value = app
        .get("/api/v1/users?page=2&limit=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["page"], 2);
    assert_eq!(body["total"], 23);
    assert_eq!(
        ids_of(body["users"].as_array().unwrap()),
        ids_of(&all[10..20])
    );
    let cursor = body["next_cursor"].as_str().expect("a cursor to page 3");
    let (third, next) = page(
        app,
        &format!("/api/v1/users?limit=10&cursor={cursor}"),
        "users",
    )
    .await;
    assert_eq!(third, ids_of(&all[20..]));
    assert_eq!(next, None, "the last page has no cursor");
}

async fn walking_events_by_cursor_returns_every_event_once_under_each_filter(stack: Stack) {
    let app = &spawn_app(stack).await;
    let users: Vec<String> = join_all((0..3).map(|_| app.create_user()))
        .await
        .iter()
        .map(|user| user["id"].as_str().unwrap().to_owned())
        .collect();
    let posts = users.iter().flat_map(|user| {
        (0..9).map(move |i| app.create_event(user, if i % 3 == 0 { "view" } else { "click" }))
    });
    join_all(posts).await;

    let mut lists = vec!["/api/v1/events".to_owned()];
    for kind in ["click", "view"] {
        lists.push(format!("/api/v1/events?type={kind}"));
    }
    for user in &users[..2] {
        lists.push(format!("/api/v1/events?user_id={user}"));
        lists.push(format!("/api/v1/events?user_id={user}&type=click"));
    }
    for list in &lists {
        let (all, total) = everything(app, list, "events").await;
        assert_eq!(all.len() as u64, total, "{list}");
        assert_newest_first(&all);
        for limit in [2, 4, 7] {
            let (ids, _) = walk(app, list, "events", limit).await;
            assert_eq!(ids, ids_of(&all), "{list} limit {limit}");
        }
    }
    assert_eq!(everything(app, "/api/v1/events", "events").await.1, 27);
    assert_eq!(everything(app, &lists[3], "events").await.1, 9);
    assert_eq!(everything(app, &lists[4], "events").await.1, 6);
}

async fn a_cursor_walk_neither_repeats_nor_skips_older_rows_when_rows_are_inserted(stack: Stack) {
    let app = &spawn_app(stack).await;
    let user = app.create_user().await;
    let user = user["id"].as_str().unwrap();
    for _ in 0..12 {
        app.create_event(user, "click").await;
    }
    let list = format!("/api/v1/events?user_id={user}");
    let (before, _) = everything(app, &list, "events").await;

    // Walk four at a time, posting two newer events before each next page.
    let (mut seen, mut next) = page(app, &with_query(&list, "limit=4"), "events").await;
    let mut posted = 0;
    while let Some(cursor) = next {
        app.create_event(user, "click").await;
        app.create_event(user, "click").await;
        posted += 2;
        let (more, after) = page(
            app,
            &with_query(&list, &format!("limit=4&cursor={cursor}")),
            "events",
        )
        .await;
        seen.extend(more);
        next = after;
    }
    assert_eq!(
        seen,
        ids_of(&before),
        "exactly the rows older than the walk"
    );
    // Two pages followed the first: the last one says no page follows.
    assert_eq!(posted, 4);
    let (after, total) = everything(app, &list, "events").await;
    assert_eq!(total, 12 + 4);
    assert_eq!(ids_of(&after[4..]), seen, "the new rows sort first");
}

async fn a_malformed_changed_or_misplaced_cursor_is_a_400_naming_it(stack: Stack) {
    let app = &spawn_app(stack).await;
    let user = app.create_user().await;
    let user = user["id"].as_str().unwrap();
    join_all((0..3).map(|_| app.create_user())).await;
    for _ in 0..3 {
        app.create_event(user, "click").await;
    }
    let users_cursor = page(app, "/api/v1/users?limit=1", "users")
        .await
        .1
        .expect("a cursor");
    let clicks = "/api/v1/events?type=click&limit=1";
    let clicks_cursor = page(app, clicks, "events").await.1.expect("a cursor");

    let mut changed = users_cursor.clone().into_bytes();
    let last = changed.len() - 1;
    changed[last] = if changed[last] == b'0' { b'1' } else { b'0' };
    let changed = String::from_utf8(changed).unwrap();
    let cases = [
        format!("/api/v1/users?cursor={changed}"),
        format!("/api/v1/users?cursor={}", &users_cursor[2..]),
        format!("/api/v1/users?cursor={users_cursor}00"),
        "/api/v1/users?cursor=".to_owned(),
        "/api/v1/users?cursor=%C3%A9".to_owned(),
        "/api/v1/users?cursor=not-a-cursor".to_owned(),
        format!("/api/v1/users?cursor={users_cursor}&page=2"),
        format!("/api/v1/users?page=1&cursor={users_cursor}"),
        // Another list's cursor: another collection, or other filters.
        format!("/api/v1/events?cursor={users_cursor}"),
        format!("/api/v1/users?cursor={clicks_cursor}"),
        format!("/api/v1/events?cursor={clicks_cursor}"),
        format!("/api/v1/events?type=view&cursor={clicks_cursor}"),
        format!("/api/v1/events?type=click&user_id={user}&cursor={clicks_cursor}"),
    ];
    for path in &cases {
        let body = assert_problem(app.get(path).await, 400, Some("cursor")).await;
        assert!(
            body["detail"].as_str().unwrap().contains("cursor"),
            "{path}: {body}"
        );
    }
    // The cursor itself was fine: with its own list it pages on.
    let (rest, _) = page(
        app,
        &format!("/api/v1/events?type=click&limit=5&cursor={clicks_cursor}"),
        "events",
    )
    .await;
    assert_eq!(rest.len(), 2);
    // Other parameters are still checked, and named, with a cursor.
    assert_problem(
        app.get(&format!("/api/v1/users?limit=0&cursor={users_cursor}"))
            .await,
        400,
        Some("limit"),
    )
    .await;
}
