//! `/docs` in a real browser: headless Chromium renders Swagger UI from the
//! service alone and shows every operation of the OpenAPI document.
//!
//! Chromium (Debian's `chromium` package, or `CHROMIUM=/path`) is required
//! under `CI=true`; elsewhere the test says it is skipped when it is missing.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Stack, spawn_app};

#[tokio::test]
async fn docs_render_every_operation_with_nothing_loaded_from_elsewhere() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing (apt-get install chromium, or set CHROMIUM)"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium, or set CHROMIUM)");
        return;
    };
    let app = spawn_app(Stack::Embedded).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let operations: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    assert!(
        operations.len() >= 15,
        "the document lists the API: {operations:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let net_log = dir.path().join("net-log.json");
    // Every host but the service's own address fails to resolve, and the
    // network log records what the page asked for.
    let output = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(format!("{}/docs", app.address))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("Chromium finishes within 90 s")
        .expect("Chromium starts");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Swagger UI gives each rendered operation the id
    // `operations-<tag>-<operationId>`.
    let missing: Vec<_> = operations
        .iter()
        .filter(|id| !dom.contains(&format!("-{id}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "operations not rendered by /docs: {missing:?}\n(DOM: {} bytes, starts {:?})",
        dom.len(),
        dom.chars().take(500).collect::<String>()
    );
    assert!(dom.contains("highload"), "the document's title is shown");

    // The page, its scripts, styles and the document all came from the
    // service. The network log names who asked for each URL: the page's
    // requests have the page's origin as initiator; Chromium's own
    // background traffic (updates, spelling dictionaries) has none.
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&net_log).unwrap())
        .expect("Chromium wrote its network log");
    let by_page: BTreeSet<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["params"]["initiator"].as_str() == Some(app.address.as_str()))
        .filter_map(|event| event["params"]["url"].as_str())
        .collect();
    for needed in [
        "/openapi.json",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        assert!(
            by_page.contains(format!("{}{needed}", app.address).as_str()),
            "the page loaded {needed}: {by_page:?}"
        );
    }
    let elsewhere: Vec<_> = by_page
        .iter()
        .filter(|url| !url.starts_with(&format!("{}/", app.address)))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "the page asked for something elsewhere: {elsewhere:?}"
    );
}

fn find_chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|path| path.is_file())
}
