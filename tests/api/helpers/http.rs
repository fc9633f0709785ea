//! Requests to the app under test, and assertions on its answers.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::{Method, Response};
use serde_json::{Value, json};

use super::app::TestApp;
use super::wait::eventually;

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path, None).await
    }

    /// Creates a user with a unique email and returns its JSON.
    pub(crate) async fn create_user(&self) -> Value {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let email = format!("user{n}-{}@example.com", uuid::Uuid::new_v4().simple());
        let response = self
            .post(
                "/api/v1/users",
                &json!({ "email": email, "first_name": "Ada", "last_name": "Lovelace" }),
            )
            .await;
        assert_eq!(response.status(), 201, "creating a user");
        response.json().await.expect("user JSON")
    }

    /// Posts an event and returns its JSON.
    pub(crate) async fn create_event(&self, user_id: &str, event_type: &str) -> Value {
        let response = self
            .post(
                "/api/v1/events",
                &json!({ "user_id": user_id, "type": event_type, "data": "{\"page\":\"/\"}" }),
            )
            .await;
        assert_eq!(response.status(), 201, "creating an event");
        response.json().await.expect("event JSON")
    }

    /// Polls the user's activity until `done` holds (or fails after 30 s).
    pub(crate) async fn wait_for_activity(
        &self,
        user_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/api/v1/users/{user_id}/activity");
        eventually(|| async {
            let response = self.get(&path).await;
            assert_eq!(response.status(), 200);
            let activity: Value = response.json().await.unwrap();
            done(&activity).then_some(activity)
        })
        .await
    }
}

/// Asserts an error response: status, problem content type, the `error`
/// message, `status` member, and (if given) the `field` named.
pub(crate) async fn assert_problem(response: Response, status: u16, field: Option<&str>) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem JSON");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(body["type"].as_str().is_some(), "{body}");
    assert_eq!(body["status"], status, "{body}");
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{body}");
    }
    body
}
