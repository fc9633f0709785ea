//! List totals are kept as the rows change, not counted at each call: they
//! must stay exact whatever runs at once.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Stack, TestApp, spawn_app};

crate::stack_tests!(list_totals_stay_exact_under_concurrent_creates_and_deletes);

/// Every item of a list, page by page, and the total it reported.
async fn list_all(app: &TestApp, path: &str, field: &str) -> (Vec<Value>, u64) {
    let mut items = Vec::new();
    let mut total = None;
    for page in 1.. {
        let separator = if path.contains('?') { '&' } else { '?' };
        let body: Value = app
            .get(&format!("{path}{separator}page={page}&limit=100"))
            .await
            .json()
            .await
            .unwrap();
        let page_items = body[field].as_array().unwrap().clone();
        let reported = body["total"].as_u64().unwrap();
        assert_eq!(*total.get_or_insert(reported), reported, "{path}");
        if page_items.is_empty() {
            break;
        }
        items.extend(page_items);
    }
    (items, total.unwrap_or_default())
}

async fn list_totals_stay_exact_under_concurrent_creates_and_deletes(stack: Stack) {
    let app = &spawn_app(stack).await;
    let users: Vec<Value> = join_all((0..12).map(|_| app.create_user())).await;
    let ids: Vec<String> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();

    // Five events per user while a third of the users are deleted.
    let posts = ids.iter().flat_map(|id| {
        (0..5).map(move |i| {
            let kind = if i % 2 == 0 { "click" } else { "view" };
            let body = json!({ "user_id": id, "type": kind, "data": "{}" });
            async move { app.post("/api/v1/events", &body).await.status().as_u16() }
        })
    });
    let deletes = ids[..4].iter().map(|id| async move {
        app.delete(&format!("/api/v1/users/{id}"))
            .await
            .status()
            .as_u16()
    });
    let (posted, deleted) = tokio::join!(join_all(posts), join_all(deletes));
    assert!(deleted.iter().all(|&s| s == 204), "{deleted:?}");
    assert!(posted.iter().all(|&s| s == 201 || s == 404), "{posted:?}");

    let (listed_users, users_total) = list_all(app, "/api/v1/users", "users").await;
    assert_eq!(users_total, 8);
    assert_eq!(listed_users.len(), 8);

    let (events, events_total) = list_all(app, "/api/v1/events", "events").await;
    assert_eq!(events.len() as u64, events_total);
    assert_eq!(events_total, 8 * 5, "the survivors' events, all of them");
    for kind in ["click", "view"] {
        let (items, total) = list_all(app, &format!("/api/v1/events?type={kind}"), "events").await;
        assert_eq!(items.len() as u64, total, "{kind}");
    }
    for id in &ids {
        let (items, total) = list_all(app, &format!("/api/v1/events?user_id={id}"), "events").await;
        assert_eq!(items.len() as u64, total, "{id}");
        let (items, total) = list_all(
            app,
            &format!("/api/v1/events?user_id={id}&type=view"),
            "events",
        )
        .await;
        assert_eq!(items.len() as u64, total, "{id} view");
    }
}
