//! `highload api-key create|list|revoke`, run as an operator would: the
//! built binary against the test's database, and the server honouring what
//! it did.

use std::process::Output;
use std::time::Duration;

use highload::auth::{AuthConfig, AuthMode};
use reqwest::Method;

use crate::helpers::{Stack, TestData, field, run_cli, spawn_app_with, stdout_of, test_config};

crate::stack_tests!(api_keys_are_created_listed_and_revoked_from_the_command_line);

/// Runs `highload api-key <args>` on the test's database.
fn api_key(data: &TestData, args: &[&str]) -> Output {
    let args: Vec<&str> = std::iter::once("api-key")
        .chain(args.iter().copied())
        .collect();
    run_cli(data, &args, &[])
}

async fn api_keys_are_created_listed_and_revoked_from_the_command_line(stack: Stack) {
    let data = TestData::new(stack).await;

    let help = stdout_of(&api_key(&data, &["--help"]));
    for subcommand in ["create", "list", "revoke"] {
        assert!(help.contains(subcommand), "{help}");
    }
    let refused = api_key(&data, &["create", "--name", "x", "--scope", "read,root"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown scope"),
        "{refused:?}"
    );

    // Before the server ever ran: the command migrates the database.
    let created = stdout_of(&api_key(
        &data,
        &["create", "--name", "reporting", "--scope", "read"],
    ));
    let id = field(&created, "id:").to_owned();
    let key = field(&created, "key:").to_owned();
    assert!(key.starts_with("hlk_"), "{created}");
    assert_eq!(field(&created, "scopes:"), "read");

    let listed = stdout_of(&api_key(&data, &["list"]));
    assert!(
        listed.contains(&id) && listed.contains("reporting"),
        "{listed}"
    );
    assert!(
        !listed.contains(&key),
        "the key is shown once, never listed"
    );

    let mut config = test_config(&data);
    config.auth = AuthConfig {
        mode: AuthMode::ApiKey,
        api_key_cache_ttl: Duration::ZERO,
        ..AuthConfig::default()
    };
    let app = spawn_app_with(config, data.clone()).await;
    let get = || {
        app.client
            .request(Method::GET, app.url("/api/v1/users"))
            .header("x-api-key", &key)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    let post = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&key)
        .json(
            &serde_json::json!({ "email": "cli@example.com", "first_name": "C", "last_name": "L" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403, "a read key cannot write");

    let revoked = stdout_of(&api_key(&data, &["revoke", &id]));
    assert!(revoked.contains(&id), "{revoked}");
    assert_eq!(get().await.unwrap().status(), 401);
    let again = api_key(&data, &["revoke", &id]);
    assert!(!again.status.success(), "revoking twice is an error");
    let listed = stdout_of(&api_key(&data, &["list"]));
    let line = listed.lines().find(|l| l.contains(&id)).unwrap();
    let revoked_at = line.split_whitespace().nth(4).unwrap();
    assert!(
        revoked_at.ends_with('Z'),
        "the revocation time is listed: {line}"
    );
    app.stop().await.unwrap();

    // Found by a hostile client: names printed raw, so an escape sequence
    // or a newline in one faked rows. `create` refuses them; `list` shows
    // one stored by other means escaped.
    let sneaky = "ok\u{1b}[2J\nfake-row";
    let refused = api_key(&data, &["create", "--name", sneaky, "--scope", "read"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("control characters"),
        "{refused:?}"
    );
    crate::helpers::fetch_text(
        &data,
        "UPDATE api_keys SET name = $1 WHERE name = 'reporting' RETURNING name",
        &[sneaky],
    )
    .await;
    let listed = stdout_of(&api_key(&data, &["list"]));
    assert!(!listed.contains('\u{1b}'), "{listed:?}");
    assert!(
        !listed.lines().any(|line| line.starts_with("fake-row")),
        "{listed:?}"
    );
    assert!(listed.contains("ok\\u{1b}[2J\\nfake-row"), "{listed:?}");
}
