//! The release binary as an operator runs it: configuration errors, help,
//! and SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{eventually, free_port};

const BINARY: &str = env!("CARGO_BIN_EXE_highload");

/// A command for the binary with a clean environment in a fresh directory.
pub(crate) fn highload(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .current_dir(dir.path())
        .env("LOG_FORMAT", "json");
    command
}

#[test]
fn help_lists_every_setting_with_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let output = highload(&dir).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "SERVER_HOST",
        "SERVER_PORT",
        "DB_HOST",
        "DB_PORT",
        "DB_USER",
        "DB_PASSWORD",
        "DB_NAME",
        "DB_SSLMODE",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "REDIS_DB",
        "KAFKA_BROKERS",
        "KAFKA_TOPIC",
        "KAFKA_GROUP_ID",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "DATABASE_URL",
        "REDIS_URL",
        "SQLITE_PATH",
        "WORKER_COUNT",
        "WORKER_QUEUE_CAPACITY",
        "SHUTDOWN_TIMEOUT",
        "HTTP_HEADER_READ_TIMEOUT",
        "HTTP_IDLE_TIMEOUT",
        "HTTP_MAX_CONNECTIONS",
        "SERVER_TLS_CERT_FILE",
        "SERVER_TLS_KEY_FILE",
        "SERVER_TLS_RELOAD_INTERVAL",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help lacks {variable}"
        );
    }
    for default in [
        "[default: 8080]",
        "[default: user-events]",
        "[default: highload-service]",
    ] {
        assert!(help.contains(default), "--help lacks {default}");
    }
}

#[test]
fn a_bad_value_stops_startup_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("SERVER_PORT", "eighty"),
        ("WORKER_COUNT", "0"),
        ("LOG_LEVEL", "shout=["),
        ("DATABASE_URL", "mysql://db/x"),
        ("SHUTDOWN_TIMEOUT", "later"),
        ("HTTP_HEADER_READ_TIMEOUT", "0s"),
        ("HTTP_IDLE_TIMEOUT", "soon"),
        ("HTTP_MAX_CONNECTIONS", "0"),
        ("SERVER_TLS_RELOAD_INTERVAL", "-1s"),
        ("SERVER_TLS_CERT_FILE", "tls.crt"),
    ] {
        let output = highload(&dir).env(variable, value).output().unwrap();
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }

    // A certificate that cannot be read stops start-up too, naming it.
    let output = highload(&dir)
        .env("SERVER_PORT", "0")
        .env("SERVER_TLS_CERT_FILE", "missing.crt")
        .env("SERVER_TLS_KEY_FILE", "missing.key")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("missing.crt (SERVER_TLS_CERT_FILE)"), "{log}");
}

#[test]
fn empty_variables_count_as_unset_like_the_go_service() {
    let dir = tempfile::tempdir().unwrap();
    // A bad DATABASE_URL stops start-up only after every variable parsed:
    // had the empty REDIS_DB or DB_PORT counted as a value, it would be the
    // error. (--version would not do: it exits before variables are read.)
    let output = highload(&dir)
        .env("REDIS_DB", "")
        .env("DB_PORT", "")
        .env("DATABASE_URL", "mysql://db/x")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(
        !stderr.contains("REDIS_DB") && !stderr.contains("DB_PORT"),
        "{stderr}"
    );
}

/// Sends SIGTERM and returns the exit status, failing after `limit`.
pub(crate) async fn terminate(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within {limit:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the binary on a free port with `env`, waits until it is ready,
/// and creates one user through it.
async fn start_and_write(dir: &tempfile::TempDir, env: &[(&str, String)]) -> std::process::Child {
    let port = free_port();
    let mut command = highload(dir);
    command
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", port.to_string())
        .stdout(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(|| async {
        let ready = client.get(format!("{base}/health/ready")).send().await;
        ready.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    let created = client
        .post(format!("{base}/api/v1/users"))
        .json(
            &serde_json::json!({ "email": "sig@example.com", "first_name": "S", "last_name": "T" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    child
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_and_write(&dir, &[]).await;
    assert!(
        dir.path().join("data/highload.db").exists(),
        "data file under ./data"
    );
    let status = terminate(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_exits_promptly_while_kafka_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the bus stays down for the whole run, and the
    // write above still succeeded (it waits in the outbox).
    let unreachable = format!("127.0.0.1:{}", free_port());
    let mut child = start_and_write(
        &dir,
        &[
            ("KAFKA_BROKERS", unreachable),
            ("KAFKA_DELIVERY_TIMEOUT", "2s".into()),
            ("SHUTDOWN_TIMEOUT", "10s".into()),
        ],
    )
    .await;
    let status = terminate(&mut child, Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "the outbox keeps what was not published"
    );
}

#[test]
fn help_never_prints_a_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=otlp-secret-1"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "authorization=otlp-secret-2",
        ),
        ("DATABASE_URL", "postgres://u:db-secret-3@h/d"),
        ("REDIS_URL", "redis://:redis-secret-4@h:6379/0"),
        ("JWT_SECRET", "jwt-secret-5-of-at-least-32-bytes-long"),
        ("METRICS_TOKEN", "metrics-secret-6"),
    ];
    let output = highload(&dir).envs(secrets).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (variable, value) in secrets {
        assert!(help.contains(variable), "--help lacks {variable}");
        let secret = value
            .rsplit(['=', ':', '@'])
            .find(|part| part.contains("secret"))
            .unwrap();
        assert!(!help.contains(secret), "--help shows {variable}'s value");
    }
    assert!(!help.to_lowercase().contains("authorization="), "{help}");
}

#[tokio::test]
async fn accepted_writes_log_nothing_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("highload.log");
    let (mut child, port) = crate::connections::start_binary(
        &dir,
        &[("LOG_LEVEL", "info")],
        None,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let lines = || std::fs::read_to_string(&log).unwrap().lines().count();
    let before = lines();
    for i in 0..20 {
        let user: serde_json::Value = client
            .post(format!("{base}/api/v1/users"))
            .json(&serde_json::json!({ "email": format!("w{i}@example.com"), "first_name": "W", "last_name": "L" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let event = client
            .post(format!("{base}/api/v1/events"))
            .json(&serde_json::json!({ "user_id": user["id"], "type": "login", "data": "{}" }))
            .send()
            .await
            .unwrap();
        assert_eq!(event.status(), 201);
    }
    let during = lines() - before;
    assert_eq!(
        terminate(&mut child.0, Duration::from_secs(20))
            .await
            .code(),
        Some(0)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(during < 5, "{during} lines at info for 40 writes:\n{text}");
}
