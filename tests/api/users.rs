use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Stack, assert_problem, spawn_app};

crate::stack_tests!(
    create_user_returns_201_with_the_stored_user,
    get_user_returns_the_user_and_404_or_400_for_bad_ids,
    create_user_returns_400_naming_the_invalid_field,
    create_user_returns_409_when_email_is_taken,
    update_user_changes_only_given_fields_and_the_next_get_sees_it,
    update_user_returns_409_when_the_email_belongs_to_another_user,
    update_user_rejects_bad_input_and_unknown_ids,
    delete_user_returns_204_then_404_and_removes_their_events,
    list_users_pages_newest_first_with_the_total,
    list_users_rejects_out_of_range_pagination,
    collection_paths_answer_the_same_with_a_trailing_slash,
    oversized_and_non_json_bodies_get_413_and_415,
    request_ids_are_echoed_or_generated,
    unknown_routes_and_methods_get_problem_responses,
    activity_of_an_unknown_user_is_404,
);

async fn create_user_returns_201_with_the_stored_user(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app
        .post(
            "/api/v1/users",
            &json!({ "email": " Grace@Example.COM ", "first_name": " Grace ", "last_name": "Hopper" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "application/json");
    let user: Value = response.json().await.unwrap();
    assert_eq!(
        user["email"], "grace@example.com",
        "canonical: trimmed, lowercased"
    );
    assert_eq!(user["first_name"], "Grace");
    assert_eq!(user["last_name"], "Hopper");
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
    let created = chrono::DateTime::parse_from_rfc3339(user["created_at"].as_str().unwrap());
    assert!(created.is_ok(), "created_at is RFC 3339");
    assert_eq!(user["created_at"], user["updated_at"]);
    let keys: Vec<_> = user.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys.len(),
        6,
        "id, email, first_name, last_name, created_at, updated_at: {keys:?}"
    );

    let stored: Value = app
        .get(&format!("/api/v1/users/{}", user["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored, user);
}

async fn get_user_returns_the_user_and_404_or_400_for_bad_ids(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    for _ in 0..2 {
        // the second read is served by the cache
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), user);
    }
    let missing = app
        .get(&format!("/api/v1/users/{}", uuid::Uuid::new_v4()))
        .await;
    let body = assert_problem(missing, 404, None).await;
    assert_eq!(body["error"], "User not found");
    let bad = app.get("/api/v1/users/not-a-uuid").await;
    let body = assert_problem(bad, 400, None).await;
    assert_eq!(body["error"], "Invalid user ID");
    let not_utf8 = app.get("/api/v1/users/%FF").await;
    assert_eq!(
        assert_problem(not_utf8, 400, None).await["error"],
        "Invalid user ID"
    );
}

async fn create_user_returns_400_naming_the_invalid_field(stack: Stack) {
    let app = spawn_app(stack).await;
    let cases = [
        (
            json!({ "first_name": "A", "last_name": "B" }),
            Some("email"),
        ),
        (
            json!({ "email": 42, "first_name": "A", "last_name": "B" }),
            Some("email"),
        ),
        (
            json!({ "email": null, "first_name": "A", "last_name": "B" }),
            Some("email"),
        ),
        (
            json!({ "email": "not-an-email", "first_name": "A", "last_name": "B" }),
            Some("email"),
        ),
        (
            json!({ "email": format!("{}@example.com", "a".repeat(250)), "first_name": "A", "last_name": "B" }),
            Some("email"),
        ),
        (
            json!({ "email": "a@example.com", "first_name": "   ", "last_name": "B" }),
            Some("first_name"),
        ),
        (
            json!({ "email": "a@example.com", "first_name": "A", "last_name": "x".repeat(101) }),
            Some("last_name"),
        ),
        (
            json!({ "email": "a@example.com", "first_name": ["A"], "last_name": "B" }),
            Some("first_name"),
        ),
        (json!(["a@example.com", "A", "B"]), None),
        (json!("just a string"), None),
    ];
    for (body, field) in cases {
        let response = app.post("/api/v1/users", &body).await;
        assert_problem(response, 400, field).await;
    }
    for raw in ["{\"email\": ", "", "{}{}", "{\"email\":\"a@b.co\",}"] {
        let response = app
            .client
            .post(app.url("/api/v1/users"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, None).await;
    }
    let list: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(list["total"], 0, "nothing was stored");
}

async fn create_user_returns_409_when_email_is_taken(stack: Stack) {
    let app = spawn_app(stack).await;
    let body = json!({ "email": "dup@example.com", "first_name": "A", "last_name": "B" });
    assert_eq!(app.post("/api/v1/users", &body).await.status(), 201);
    let again = app.post("/api/v1/users", &body).await;
    let problem = assert_problem(again, 409, Some("email")).await;
    assert_eq!(problem["error"], "Email already exists");
    // The domain is case-insensitive, so this is the same address.
    let shouting = json!({ "email": "dup@EXAMPLE.com", "first_name": "C", "last_name": "D" });
    assert_problem(
        app.post("/api/v1/users", &shouting).await,
        409,
        Some("email"),
    )
    .await;
    let list: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(list["total"], 1);
}

async fn update_user_changes_only_given_fields_and_the_next_get_sees_it(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    // Warm the cache so that the update has something to invalidate.
    assert_eq!(app.get(&path).await.status(), 200);

    let response = app.put(&path, &json!({ "first_name": "Augusta" })).await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["first_name"], "Augusta");
    assert_eq!(updated["last_name"], user["last_name"]);
    assert_eq!(updated["email"], user["email"]);
    assert_eq!(updated["created_at"], user["created_at"]);
    assert_ne!(updated["updated_at"], user["updated_at"]);

    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, updated, "the next GET sees the update");

    let response = app
        .put(
            &path,
            &json!({ "email": "new@example.com", "last_name": null }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read["email"], "new@example.com");
    assert_eq!(
        read["last_name"], user["last_name"],
        "null leaves a field as it is"
    );

    // An empty update changes nothing.
    let response = app.put(&path, &json!({})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), read);
}

async fn update_user_returns_409_when_the_email_belongs_to_another_user(stack: Stack) {
    let app = spawn_app(stack).await;
    let first = app.create_user().await;
    let second = app.create_user().await;
    let path = format!("/api/v1/users/{}", second["id"].as_str().unwrap());
    let response = app.put(&path, &json!({ "email": first["email"] })).await;
    assert_problem(response, 409, Some("email")).await;
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, second, "the failed update changed nothing");
    // Keeping one's own address is not a conflict.
    let response = app.put(&path, &json!({ "email": second["email"] })).await;
    assert_eq!(response.status(), 200);
}

async fn update_user_rejects_bad_input_and_unknown_ids(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    assert_problem(
        app.put(&path, &json!({ "email": "nope" })).await,
        400,
        Some("email"),
    )
    .await;
    assert_problem(
        app.put(&path, &json!({ "first_name": "" })).await,
        400,
        Some("first_name"),
    )
    .await;
    assert_problem(
        app.put(&path, &json!({ "last_name": 7 })).await,
        400,
        Some("last_name"),
    )
    .await;
    let unknown = format!("/api/v1/users/{}", uuid::Uuid::new_v4());
    assert_problem(
        app.put(&unknown, &json!({ "first_name": "X" })).await,
        404,
        None,
    )
    .await;
    assert_problem(app.put(&unknown, &json!({})).await, 404, None).await;
    assert_problem(
        app.put("/api/v1/users/123", &json!({ "first_name": "X" }))
            .await,
        400,
        None,
    )
    .await;
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, user);
}

async fn delete_user_returns_204_then_404_and_removes_their_events(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap();
    let event = app.create_event(id, "login").await;
    let event_path = format!("/api/v1/events/{}", event["id"].as_str().unwrap());
    let path = format!("/api/v1/users/{id}");
    // Cache both, so that the delete has to invalidate them.
    assert_eq!(app.get(&path).await.status(), 200);
    assert_eq!(app.get(&event_path).await.status(), 200);

    let response = app.delete(&path).await;
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_problem(app.get(&path).await, 404, None).await;
    assert_problem(app.get(&event_path).await, 404, None).await;
    assert_problem(app.delete(&path).await, 404, None).await;
    assert_problem(app.delete("/api/v1/users/xyz").await, 400, None).await;
    let events: Value = app
        .get(&format!("/api/v1/events?user_id={id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["total"], 0);
}

async fn list_users_pages_newest_first_with_the_total(stack: Stack) {
    let app = spawn_app(stack).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.create_user().await);
    }
    let page1: Value = app
        .get("/api/v1/users?page=1&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page1["total"], 5);
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["limit"], 2);
    assert_eq!(page1["users"], json!([created[4], created[3]]));
    let page3: Value = app
        .get("/api/v1/users?page=3&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page3["users"], json!([created[0]]));
    let beyond: Value = app
        .get("/api/v1/users?page=9&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(beyond["users"], json!([]));
    assert_eq!(beyond["total"], 5);
    let defaults: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(defaults["page"], 1);
    assert_eq!(defaults["limit"], 10);
    assert_eq!(defaults["users"].as_array().unwrap().len(), 5);
}

async fn list_users_rejects_out_of_range_pagination(stack: Stack) {
    let app = spawn_app(stack).await;
    for (query, field) in [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=1.5", "limit"),
    ] {
        let response = app.get(&format!("/api/v1/users?{query}")).await;
        assert_problem(response, 400, Some(field)).await;
    }
    assert_eq!(app.get("/api/v1/users?limit=100").await.status(), 200);
}

async fn collection_paths_answer_the_same_with_a_trailing_slash(stack: Stack) {
    let app = spawn_app(stack).await;
    for base in ["/api/v1/users", "/api/v1/users/"] {
        let body = json!({
            "email": format!("slash{}@example.com", base.len()),
            "first_name": "S",
            "last_name": "L",
        });
        let response = app.post(base, &body).await;
        assert_eq!(response.status(), 201, "POST {base}");
        let user: Value = response.json().await.unwrap();
        let id = user["id"].as_str().unwrap();
        let list = app.get(base).await;
        assert_eq!(list.status(), 200, "GET {base}");

        let item = format!("/api/v1/users/{id}/");
        assert_eq!(app.get(&item).await.status(), 200, "GET {item}");
        let updated = app.put(&item, &json!({ "last_name": "Slash" })).await;
        assert_eq!(updated.status(), 200, "PUT {item}");
        assert_eq!(updated.json::<Value>().await.unwrap()["last_name"], "Slash");
        let activity = format!("/api/v1/users/{id}/activity/");
        assert_eq!(app.get(&activity).await.status(), 200, "GET {activity}");

        for events in ["/api/v1/events", "/api/v1/events/"] {
            let created = app
                .post(
                    events,
                    &json!({ "user_id": id, "type": "click", "data": "" }),
                )
                .await;
            assert_eq!(created.status(), 201, "POST {events}");
            let event: Value = created.json().await.unwrap();
            assert_eq!(app.get(events).await.status(), 200, "GET {events}");
            let one = format!("/api/v1/events/{}/", event["id"].as_str().unwrap());
            assert_eq!(app.get(&one).await.status(), 200, "GET {one}");
        }
        assert_eq!(app.delete(&item).await.status(), 204, "DELETE {item}");
    }
    assert_eq!(app.get("/health/live/").await.status(), 200);
}

async fn oversized_and_non_json_bodies_get_413_and_415(stack: Stack) {
    let app = spawn_app(stack).await;
    let limit = app.config.server.http_body_limit;
    let huge =
        json!({ "email": "a@example.com", "first_name": "x".repeat(limit), "last_name": "y" });
    assert_problem(app.post("/api/v1/users", &huge).await, 413, None).await;

    let form = app
        .client
        .post(app.url("/api/v1/users"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=a@example.com&first_name=A&last_name=B")
        .send()
        .await
        .unwrap();
    assert_problem(form, 415, None).await;
    let untyped = app
        .client
        .post(app.url("/api/v1/users"))
        .body(r#"{"email":"a@example.com","first_name":"A","last_name":"B"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(untyped, 415, None).await;
    let with_charset = app
        .client
        .post(app.url("/api/v1/users"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"email":"a@example.com","first_name":"A","last_name":"B"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(with_charset.status(), 201);
    // JSON is UTF-8 (RFC 8259): a body declared in another charset is not
    // read as if it were.
    for charset in ["utf-16", "\"UTF-16LE\"", "iso-8859-1"] {
        let declared = app
            .client
            .post(app.url("/api/v1/users"))
            .header(
                "content-type",
                format!("application/json; charset={charset}"),
            )
            .body(r#"{"email":"b@example.com","first_name":"A","last_name":"B"}"#)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(declared, 415, None).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("UTF-8"),
            "{problem}"
        );
    }
}

async fn request_ids_are_echoed_or_generated(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let response = app.get("/api/v1/users/nope").await;
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

async fn unknown_routes_and_methods_get_problem_responses(stack: Stack) {
    let app = spawn_app(stack).await;
    assert_problem(app.get("/api/v2/users").await, 404, None).await;
    let response = app
        .request(Method::PATCH, "/api/v1/users", Some(&json!({})))
        .await;
    assert_problem(response, 405, None).await;
    let response = app.request(Method::DELETE, "/api/v1/events", None).await;
    assert_problem(response, 405, None).await;
}

async fn activity_of_an_unknown_user_is_404(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app
        .get(&format!("/api/v1/users/{}/activity", uuid::Uuid::new_v4()))
        .await;
    assert_problem(response, 404, None).await;
    assert_problem(app.get("/api/v1/users/zzz/activity").await, 400, None).await;
}
