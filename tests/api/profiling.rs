//! Profiles on demand, as an operator takes them from the running binary
//! (jemalloc is its allocator there): a CPU profile under load that Go's
//! pprof reads, the allocator's statistics, and who may have them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{eventually, free_port};
use crate::process::{highload, terminate};

#[tokio::test]
async fn an_admin_takes_a_cpu_profile_that_go_pprof_reads() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "SERVER_HOST=127.0.0.1\nSERVER_PORT={port}\nAUTH_MODE=accounts\nPROFILING=true\n\
             JWT_SECRET=a-profiling-test-secret-of-32-bytes-or-more\nLOG_LEVEL=warn\n"
        ),
    )
    .unwrap();
    for (email, role) in [("admin@example.com", "admin"), ("user@example.com", "user")] {
        let created = highload(&dir)
            .args(["account", "create", "--email", email, "--role", role])
            .env("ACCOUNT_PASSWORD", "correct horse battery")
            .output()
            .unwrap();
        assert!(created.status.success(), "{created:?}");
    }
    let mut child = highload(&dir).stdout(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(|| async {
        let ready = client.get(format!("{base}/health/ready")).send().await;
        ready.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    let token = |email: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let session: Value = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({ "email": email, "password": "correct horse battery" }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            session["access_token"].as_str().unwrap().to_owned()
        }
    };
    let admin = token("admin@example.com").await;
    let user = token("user@example.com").await;

    // Load meanwhile, so that the profile has samples of the API's work.
    let load = {
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        tokio::spawn(async move {
            loop {
                let _ = client
                    .get(format!("{base}/api/v1/users?limit=10"))
                    .bearer_auth(&admin)
                    .send()
                    .await;
            }
        })
    };
    let profile = |seconds: &str, token: &str| {
        client
            .get(format!("{base}/debug/pprof/profile?seconds={seconds}"))
            .bearer_auth(token)
            .send()
    };
    let taken = tokio::spawn(profile("1", &admin));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        profile("1", &admin).await.unwrap().status(),
        409,
        "one at a time"
    );
    let taken = taken.await.unwrap().unwrap();
    assert_eq!(taken.status(), 200);
    let bytes = taken.bytes().await.unwrap();
    load.abort();
    let file = dir.path().join("profile.pb");
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(profile("0", &admin).await.unwrap().status(), 400);
    assert_eq!(profile("1", &user).await.unwrap().status(), 403);
    assert_eq!(
        client
            .get(format!("{base}/debug/pprof/profile?seconds=1"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let allocator: Value = client
        .get(format!("{base}/debug/allocator"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let allocated = allocator["allocated"].as_u64().unwrap();
    assert!(
        allocated > 1 << 20,
        "jemalloc holds the process's heap: {allocator}"
    );
    assert!(
        allocator["resident"].as_u64().unwrap() >= allocated,
        "{allocator}"
    );
    assert_eq!(
        terminate(&mut child, Duration::from_secs(20)).await.code(),
        Some(0)
    );

    // Go's pprof reads it: a CPU profile with the service's own frames.
    match std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-nodecount=200"])
        .arg(&file)
        .output()
    {
        Ok(top) => {
            let text = String::from_utf8_lossy(&top.stdout);
            assert!(
                top.status.success(),
                "{}",
                String::from_utf8_lossy(&top.stderr)
            );
            assert!(text.contains("Type: cpu"), "{text}");
            assert!(
                text.contains("highload::") || text.contains("tokio::"),
                "{text}"
            );
        }
        Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("go is not installed ({err}): pprof's reading is not checked");
        }
        Err(err) => panic!("CI needs go to read the profile: {err}"),
    }
}
