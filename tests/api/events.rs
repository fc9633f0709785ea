use serde_json::{Value, json};

use crate::helpers::{Stack, assert_problem, spawn_app};

crate::stack_tests!(
    create_event_returns_201_and_get_returns_it,
    create_event_rejects_invalid_fields_naming_them,
    create_event_for_an_unknown_user_returns_404,
    list_events_filters_by_user_and_type_and_pages,
    a_page_of_large_events_is_whole_and_pages_on,
    list_events_rejects_bad_filters_and_pagination,
    get_event_returns_404_or_400_for_bad_ids,
);

async fn create_event_returns_201_and_get_returns_it(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let data = "{\"button\":\"buy\",\"quote\":\"\\\"\"}";
    let response = app
        .post(
            "/api/v1/events",
            &json!({ "user_id": user["id"], "type": "ui.click:v2", "data": data }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let event: Value = response.json().await.unwrap();
    assert_eq!(event["user_id"], user["id"]);
    assert_eq!(event["type"], "ui.click:v2");
    assert_eq!(event["data"], data);
    assert!(chrono::DateTime::parse_from_rfc3339(event["created_at"].as_str().unwrap()).is_ok());
    let keys: Vec<_> = event.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys.len(),
        5,
        "id, user_id, type, data, created_at: {keys:?}"
    );

    let path = format!("/api/v1/events/{}", event["id"].as_str().unwrap());
    for _ in 0..2 {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), event);
    }
}

async fn create_event_rejects_invalid_fields_naming_them(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].clone();
    let max = "x".repeat(64 * 1024);
    let cases = [
        (json!({ "type": "a", "data": "" }), "user_id"),
        (
            json!({ "user_id": "nope", "type": "a", "data": "" }),
            "user_id",
        ),
        (json!({ "user_id": 12, "type": "a", "data": "" }), "user_id"),
        (json!({ "user_id": id, "data": "" }), "type"),
        (json!({ "user_id": id, "type": "", "data": "" }), "type"),
        (
            json!({ "user_id": id, "type": "has space", "data": "" }),
            "type",
        ),
        (
            json!({ "user_id": id, "type": "t".repeat(101), "data": "" }),
            "type",
        ),
        (json!({ "user_id": id, "type": "a" }), "data"),
        (
            json!({ "user_id": id, "type": "a", "data": { "k": 1 } }),
            "data",
        ),
        (
            json!({ "user_id": id, "type": "a", "data": format!("{max}y") }),
            "data",
        ),
    ];
    for (body, field) in cases {
        let response = app.post("/api/v1/events", &body).await;
        assert_problem(response, 400, Some(field)).await;
    }
    let at_limit = json!({ "user_id": id, "type": "a", "data": max });
    assert_eq!(app.post("/api/v1/events", &at_limit).await.status(), 201);
    let list: Value = app.get("/api/v1/events").await.json().await.unwrap();
    assert_eq!(list["total"], 1, "only the valid event was stored");
}

async fn create_event_for_an_unknown_user_returns_404(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app
        .post(
            "/api/v1/events",
            &json!({ "user_id": uuid::Uuid::new_v4(), "type": "login", "data": "" }),
        )
        .await;
    let problem = assert_problem(response, 404, None).await;
    assert_eq!(problem["error"], "User not found");
    let list: Value = app.get("/api/v1/events").await.json().await.unwrap();
    assert_eq!(list["total"], 0);
}

async fn list_events_filters_by_user_and_type_and_pages(stack: Stack) {
    let app = spawn_app(stack).await;
    let ann = app.create_user().await;
    let bob = app.create_user().await;
    let ann_id = ann["id"].as_str().unwrap();
    let bob_id = bob["id"].as_str().unwrap();
    let mut ann_logins = Vec::new();
    for _ in 0..3 {
        ann_logins.push(app.create_event(ann_id, "login").await);
    }
    app.create_event(ann_id, "logout").await;
    app.create_event(bob_id, "login").await;

    let all: Value = app.get("/api/v1/events").await.json().await.unwrap();
    assert_eq!(all["total"], 5);
    let by_user: Value = app
        .get(&format!("/api/v1/events?user_id={ann_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_user["total"], 4);
    let by_type: Value = app
        .get("/api/v1/events?type=login")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_type["total"], 4);
    let both: Value = app
        .get(&format!(
            "/api/v1/events?user_id={ann_id}&type=login&limit=2&page=1"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(both["total"], 3);
    assert_eq!(both["limit"], 2);
    assert_eq!(
        both["events"],
        json!([ann_logins[2], ann_logins[1]]),
        "newest first"
    );
    let page2: Value = app
        .get(&format!(
            "/api/v1/events?user_id={ann_id}&type=login&limit=2&page=2"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["events"], json!([ann_logins[0]]));
    let none: Value = app
        .get("/api/v1/events?type=purchase")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["total"], 0);
    assert_eq!(none["events"], json!([]));
}

/// A page whose events take more than a few KiB is made as the client
/// reads it: what arrives is still the whole page, events in order, each
/// as its own read returns it, and its cursor leads to the next page.
async fn a_page_of_large_events_is_whole_and_pages_on(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let mut created = Vec::new();
    for i in 0..7 {
        // Escaped in JSON, each is about 120 KiB.
        let data = format!("{i}{}\"", "\u{1}".repeat(20 * 1024));
        let response = app
            .post(
                "/api/v1/events",
                &json!({ "user_id": user["id"], "type": "bulky", "data": data }),
            )
            .await;
        assert_eq!(response.status(), 201);
        created.push(response.json::<Value>().await.unwrap());
    }
    let path = format!(
        "/api/v1/events?user_id={}&limit=5",
        user["id"].as_str().unwrap()
    );
    let response = app.get(&path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{:?}",
        response.headers()
    );
    let first: Value = response.json().await.unwrap();
    let newest: Vec<Value> = created.iter().rev().cloned().collect();
    assert_eq!(first["events"], json!(newest[..5]));
    assert_eq!(first["total"], 7);
    assert_eq!(first["page"], 1);
    assert_eq!(first["limit"], 5);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value = app
        .get(&format!("{path}&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["events"], json!(newest[5..]));
    assert_eq!(second["next_cursor"], Value::Null);
}

async fn list_events_rejects_bad_filters_and_pagination(stack: Stack) {
    let app = spawn_app(stack).await;
    for (query, field) in [
        ("user_id=123", "user_id"),
        ("type=no%20spaces", "type"),
        ("page=0", "page"),
        ("limit=500", "limit"),
    ] {
        let response = app.get(&format!("/api/v1/events?{query}")).await;
        assert_problem(response, 400, Some(field)).await;
    }
}

async fn get_event_returns_404_or_400_for_bad_ids(stack: Stack) {
    let app = spawn_app(stack).await;
    let missing = app
        .get(&format!("/api/v1/events/{}", uuid::Uuid::new_v4()))
        .await;
    let problem = assert_problem(missing, 404, None).await;
    assert_eq!(problem["error"], "Event not found");
    let bad = app.get("/api/v1/events/12345").await;
    let problem = assert_problem(bad, 400, None).await;
    assert_eq!(problem["error"], "Invalid event ID");
}
