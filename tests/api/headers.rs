//! Security headers on every response, a Content-Security-Policy that fits
//! `/docs`, and CORS by origin list.

use reqwest::{Method, Response};

use crate::helpers::{Stack, TestApp, TestData, spawn_app, spawn_app_with, test_config};

crate::stack_tests!(
    every_response_carries_the_security_headers,
    the_docs_policy_lets_swagger_ui_load_from_this_origin_only,
    cors_is_off_by_default,
    a_preflight_from_an_allowed_origin_is_answered_and_others_get_no_cors_headers,
);

const ALLOWED: &str = "https://app.example.com";

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn every_response_carries_the_security_headers(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let user_path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    for path in [
        "/api/v1/users",
        user_path.as_str(),
        "/api/v1/users/not-a-uuid",
        "/no/such/route",
        "/health",
        "/metrics",
        "/openapi.json",
        "/docs",
    ] {
        let response = app.get(path).await;
        assert_eq!(
            header(&response, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&response, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            header(&response, "referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            header(&response, "cache-control"),
            Some("no-store"),
            "{path}"
        );
        let policy = header(&response, "content-security-policy").expect("a CSP");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        if !path.starts_with("/docs") {
            assert_eq!(
                policy, "default-src 'none'; frame-ancestors 'none'",
                "{path}"
            );
        }
    }
}

async fn the_docs_policy_lets_swagger_ui_load_from_this_origin_only(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), 200);
    let policy = header(&response, "content-security-policy")
        .unwrap()
        .to_owned();
    let html = response.text().await.unwrap();
    let directive = |name: &str| -> Vec<String> {
        let found = policy
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {policy}"));
        found.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(directive("default-src"), ["'none'"]);
    assert_eq!(directive("script-src"), ["'self'"]);
    assert_eq!(directive("connect-src"), ["'self'"]);
    assert_eq!(directive("img-src"), ["'self'", "data:"]);
    // No inline script, which the policy would block: each script is a
    // file of this origin's, served under /docs/ with the same policy.
    let scripts: Vec<&str> = html
        .split("<script")
        .skip(1)
        .map(|tag| {
            let src = tag
                .strip_prefix(" src=\"")
                .unwrap_or_else(|| panic!("an inline script: <script{tag}"));
            &src[..src.find('"').unwrap()]
        })
        .collect();
    assert!(scripts.contains(&"./swagger-initializer.js"), "{html}");
    for script in scripts {
        assert!(!script.contains("//"), "{script} is on another origin");
        let asset = format!("/docs/{}", script.trim_start_matches("./"));
        let response = app.get(&asset).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(
            header(&response, "content-security-policy"),
            Some(policy.as_str()),
            "{asset}"
        );
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
}

async fn preflight(app: &TestApp, origin: &str) -> Response {
    app.client
        .request(Method::OPTIONS, app.url("/api/v1/users"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, idempotency-key",
        )
        .send()
        .await
        .expect("preflight sent")
}

fn cors_headers(response: &Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

async fn cors_is_off_by_default(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = preflight(&app, ALLOWED).await;
    assert_eq!(response.status(), 405);
    assert_eq!(cors_headers(&response), Vec::<String>::new());
}

async fn a_preflight_from_an_allowed_origin_is_answered_and_others_get_no_cors_headers(
    stack: Stack,
) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.guard.cors_allowed_origins = vec![ALLOWED.to_owned(), "http://localhost:3000".into()];
    let app = spawn_app_with(config, data).await;

    let allowed = preflight(&app, ALLOWED).await;
    assert!(
        matches!(allowed.status().as_u16(), 200 | 204),
        "{}",
        allowed.status()
    );
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let methods = header(&allowed, "access-control-allow-methods")
        .unwrap()
        .to_lowercase();
    assert!(
        methods.contains("post") && methods.contains("delete"),
        "{methods}"
    );
    let headers = header(&allowed, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    assert!(
        headers.contains("content-type") && headers.contains("idempotency-key"),
        "{headers}"
    );
    assert!(header(&allowed, "access-control-max-age").is_some());
    assert!(
        header(&allowed, "vary")
            .unwrap()
            .to_lowercase()
            .contains("origin")
    );

    let other = preflight(&app, "https://evil.example.com").await;
    assert_eq!(cors_headers(&other), Vec::<String>::new());

    // Answers too: the allowed origin is named, another gets nothing.
    let get = |origin: &'static str| {
        app.client
            .get(app.url("/api/v1/users"))
            .header("origin", origin)
            .send()
    };
    let response = get("http://localhost:3000").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let exposed = header(&response, "access-control-expose-headers")
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("retry-after") && exposed.contains("x-request-id"),
        "{exposed}"
    );
    let response = get("https://evil.example.com").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(cors_headers(&response), Vec::<String>::new());
}
