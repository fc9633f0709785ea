//! Real responses of every endpoint match the OpenAPI document the service
//! serves: documented status, content type, and body schema.

use std::collections::BTreeSet;
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{Value, json};

use crate::accounts::{PASSWORD, accounts_auth, create_account, spawn_with};
use crate::helpers::{Stack, TestApp, spawn_app};

crate::stack_tests!(every_endpoint_answers_as_the_openapi_document_says);

/// The copy in the repository, for client teams and API reviews.
const COMMITTED: &str = include_str!("../../api/openapi.json");

#[tokio::test]
async fn the_committed_document_is_the_one_served() {
    let app = spawn_app(Stack::Embedded).await;
    let served = app.get("/openapi.json").await.text().await.unwrap();
    assert!(
        served.trim_end() == COMMITTED.trim_end(),
        "api/openapi.json differs from what the service serves: regenerate it with \
         `cargo run -- openapi > api/openapi.json` and review the diff"
    );
}

/// The document, and which operations the test exercised.
struct Contract {
    doc: Value,
    exercised: Mutex<BTreeSet<(String, String)>>,
}

impl Contract {
    async fn fetch(app: &TestApp) -> Self {
        let response = app.get("/openapi.json").await;
        assert_eq!(response.status(), 200);
        let doc: Value = response.json().await.unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "OpenAPI 3.1"
        );
        Self {
            doc,
            exercised: Mutex::default(),
        }
    }

    /// Sends a request and checks its response against the document, at the
    /// documented `template` path.
    async fn call(
        &self,
        app: &TestApp,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let response = app.request(method.clone(), path, body.as_ref()).await;
        self.check(method, template, response).await
    }

    async fn check(&self, method: Method, template: &str, response: reqwest::Response) -> Value {
        let method = method.as_str().to_lowercase();
        let status = response.status().as_u16().to_string();
        let operation = &self.doc["paths"][template][&method];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let documented = &operation["responses"][&status];
        assert!(
            documented.is_object(),
            "{method} {template} answered {status}, not documented"
        );
        self.exercised
            .lock()
            .unwrap()
            .insert((method.clone(), template.to_owned()));

        let content_type = response.headers().get("content-type").map(|v| {
            v.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_owned()
        });
        let text = response.text().await.unwrap();
        let Some(content) = documented["content"].as_object() else {
            assert!(
                text.is_empty(),
                "{method} {template} {status}: a body where none is documented"
            );
            return Value::Null;
        };
        let content_type = content_type.expect("a content type");
        let media = content.get(&content_type).unwrap_or_else(|| {
            panic!("{method} {template} {status}: {content_type} not documented")
        });
        if !content_type.ends_with("json") {
            assert_eq!(media["schema"]["type"], "string");
            return Value::String(text);
        }
        let body: Value = serde_json::from_str(&text).expect("JSON body");
        let schema = self.strict_schema(&media["schema"]);
        let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
        if let Err(error) = validator.validate(&body) {
            panic!(
                "{method} {template} {status}: {error}\nbody: {body}\nschema: {}",
                media["schema"]
            );
        }
        body
    }

    /// `schema`, resolvable against the document's components, with every
    /// object closed (`additionalProperties: false`) so that an undocumented
    /// field fails too.
    fn strict_schema(&self, schema: &Value) -> Value {
        fn close(value: &mut Value) {
            match value {
                Value::Object(map) => {
                    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                        map.insert("additionalProperties".into(), Value::Bool(false));
                    }
                    map.values_mut().for_each(close);
                }
                Value::Array(items) => items.iter_mut().for_each(close),
                _ => {}
            }
        }
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        close(&mut root);
        root
    }

    fn documented_operations(&self) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                operations.insert((method.clone(), path.clone()));
            }
        }
        operations
    }
}

async fn every_endpoint_answers_as_the_openapi_document_says(stack: Stack) {
    let app = spawn_app(stack).await;
    let c = Contract::fetch(&app).await;
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let users = "/api/v1/users";
    let user = "/api/v1/users/{id}";
    let activity = "/api/v1/users/{id}/activity";
    let events = "/api/v1/events";
    let event = "/api/v1/events/{id}";
    let unknown = uuid::Uuid::new_v4();

    let new_user = json!({ "email": "contract@example.com", "first_name": "C", "last_name": "T" });
    let created = c
        .call(&app, post.clone(), users, users, Some(new_user.clone()))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    c.call(&app, post.clone(), users, users, Some(new_user))
        .await; // 409
    c.call(
        &app,
        post.clone(),
        users,
        users,
        Some(json!({ "email": 1 })),
    )
    .await; // 400
    let form = app
        .client
        .post(app.url(users))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    c.check(post.clone(), users, form).await; // 415
    let huge = json!({ "email": "x".repeat(app.config.server.http_body_limit) });
    c.call(&app, post.clone(), users, users, Some(huge)).await; // 413
    c.call(
        &app,
        get.clone(),
        users,
        "/api/v1/users?page=1&limit=5",
        None,
    )
    .await;
    c.call(&app, get.clone(), users, "/api/v1/users?limit=0", None)
        .await; // 400

    let own = format!("/api/v1/users/{id}");
    c.call(&app, get.clone(), user, &own, None).await;
    c.call(&app, get.clone(), user, "/api/v1/users/nope", None)
        .await; // 400
    c.call(
        &app,
        get.clone(),
        user,
        &format!("/api/v1/users/{unknown}"),
        None,
    )
    .await; // 404
    c.call(
        &app,
        put.clone(),
        user,
        &own,
        Some(json!({ "last_name": "Updated" })),
    )
    .await;
    c.call(
        &app,
        put.clone(),
        user,
        &own,
        Some(json!({ "first_name": "" })),
    )
    .await; // 400
    let other = app.create_user().await;
    c.call(
        &app,
        put.clone(),
        user,
        &own,
        Some(json!({ "email": other["email"] })),
    )
    .await; // 409
    c.call(
        &app,
        put.clone(),
        user,
        &format!("/api/v1/users/{unknown}"),
        Some(json!({})),
    )
    .await; // 404

    let new_event = json!({ "user_id": id, "type": "contract", "data": "{}" });
    let posted = c
        .call(&app, post.clone(), events, events, Some(new_event))
        .await;
    c.call(
        &app,
        post.clone(),
        events,
        events,
        Some(json!({ "user_id": id })),
    )
    .await; // 400
    c.call(
        &app,
        post.clone(),
        events,
        events,
        Some(json!({ "user_id": unknown, "type": "a", "data": "" })),
    )
    .await; // 404
    c.call(
        &app,
        get.clone(),
        events,
        &format!("/api/v1/events?user_id={id}&type=contract"),
        None,
    )
    .await;
    c.call(&app, get.clone(), events, "/api/v1/events?type=a%20b", None)
        .await; // 400
    let posted_path = format!("/api/v1/events/{}", posted["id"].as_str().unwrap());
    c.call(&app, get.clone(), event, &posted_path, None).await;
    c.call(
        &app,
        get.clone(),
        event,
        &format!("/api/v1/events/{unknown}"),
        None,
    )
    .await; // 404
    c.call(&app, get.clone(), event, "/api/v1/events/1", None)
        .await; // 400
    app.wait_for_activity(&id, |a| a["total_events"].as_u64() >= Some(1))
        .await;
    c.call(
        &app,
        get.clone(),
        activity,
        &format!("{own}/activity"),
        None,
    )
    .await;
    c.call(
        &app,
        get.clone(),
        activity,
        &format!("/api/v1/users/{unknown}/activity"),
        None,
    )
    .await; // 404
    c.call(
        &app,
        get.clone(),
        activity,
        "/api/v1/users/x/activity",
        None,
    )
    .await; // 400

    c.call(&app, delete.clone(), user, &own, None).await; // 204
    c.call(&app, delete.clone(), user, &own, None).await; // 404
    c.call(&app, delete, user, "/api/v1/users/x", None).await; // 400

    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
    ] {
        c.call(&app, get.clone(), path, path, None).await;
    }

    // Without AUTH_MODE=accounts the accounts' paths are not there, nor
    // is key creation without any AUTH_MODE.
    let login = "/api/v1/auth/login";
    let refresh = "/api/v1/auth/refresh";
    let logout = "/api/v1/auth/logout";
    let profile = "/api/v1/auth/profile";
    let api_keys = "/api/v1/api-keys";
    let credentials = json!({ "email": "admin@example.com", "password": PASSWORD });
    c.call(&app, post.clone(), login, login, Some(credentials.clone()))
        .await; // 404
    c.call(
        &app,
        post.clone(),
        refresh,
        refresh,
        Some(json!({ "refresh_token": "x" })),
    )
    .await; // 404
    c.call(&app, get.clone(), profile, profile, None).await; // 404
    c.call(&app, post.clone(), api_keys, api_keys, Some(json!({})))
        .await; // 404
    let admin_views = [
        "/admin/ddos-stats",
        "/admin/security/stats",
        "/admin/security/events",
    ];
    for view in admin_views {
        c.call(&app, get.clone(), view, view, None).await; // 404
    }

    // With it: each answer of each.
    let (app, data) = spawn_with(stack, accounts_auth()).await;
    create_account(&data, "admin@example.com", "admin");
    let wrong = json!({ "email": "admin@example.com", "password": "wrong password" });
    c.call(&app, post.clone(), login, login, Some(wrong)).await; // 401
    c.call(
        &app,
        post.clone(),
        login,
        login,
        Some(json!({ "email": 1 })),
    )
    .await; // 400
    let session = c
        .call(&app, post.clone(), login, login, Some(credentials))
        .await; // 200
    let access = session["access_token"].as_str().unwrap().to_owned();
    let renewed = c
        .call(
            &app,
            post.clone(),
            refresh,
            refresh,
            Some(json!({ "refresh_token": session["refresh_token"] })),
        )
        .await; // 200
    c.call(
        &app,
        post.clone(),
        refresh,
        refresh,
        Some(json!({ "refresh_token": session["refresh_token"] })),
    )
    .await; // 401
    let authorized = |method: Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&access)
    };
    let read = authorized(get.clone(), profile).send().await.unwrap();
    c.check(get.clone(), profile, read).await; // 200
    let key = authorized(post.clone(), api_keys)
        .json(&json!({ "name": "contract", "permissions": ["read"] }))
        .send()
        .await
        .unwrap();
    c.check(post.clone(), api_keys, key).await; // 201
    let bad_key = authorized(post.clone(), api_keys)
        .json(&json!({ "name": "contract", "permissions": ["root"] }))
        .send()
        .await
        .unwrap();
    c.check(post.clone(), api_keys, bad_key).await; // 400
    let out = authorized(post.clone(), logout)
        .json(&json!({ "refresh_token": renewed["refresh_token"] }))
        .send()
        .await
        .unwrap();
    c.check(post.clone(), logout, out).await; // 200
    let anonymous = app.client.post(app.url(logout)).send().await.unwrap();
    c.check(post.clone(), logout, anonymous).await; // 401
    for view in admin_views {
        let seen = authorized(get.clone(), view).send().await.unwrap();
        c.check(get.clone(), view, seen).await; // 200
    }

    let exercised = c.exercised.lock().unwrap().clone();
    let missing: Vec<_> = c
        .documented_operations()
        .difference(&exercised)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exercised: {missing:?}"
    );
}
