//! The listener against slow, idle and too many clients: the header-read
//! and idle timeouts, slow bodies (408, and no admission slot held), the
//! connection cap, and a shutdown that closes the connections without a
//! request being handled at once and finishes the others.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    Stack, TestApp, TestData, eventually, free_port, spawn_app_with, test_config,
};
use crate::process::{highload, terminate};
use crate::stack_tests;

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: highload\r\n\r\n";

/// An app whose listener has these timeouts and cap.
async fn spawn_with(
    stack: Stack,
    header_read: Duration,
    idle: Duration,
    max_connections: Option<u32>,
) -> TestApp {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.listener.header_read_timeout = header_read;
    config.listener.idle_timeout = idle;
    config.listener.max_connections = max_connections;
    spawn_app_with(config, data).await
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Reads one response; returns its head and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a content-length");
        if body.len() >= length {
            return (head.to_owned(), body.to_owned());
        }
    }
}

/// Waits until the server closes `stream` (end of stream or reset); how
/// long that took, or `None` if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A POST whose head is sent whole and whose body starts, then stops.
async fn start_slow_upload(port: u16) -> TcpStream {
    let mut stream = connect(port).await;
    stream
        .write_all(
            b"POST /api/v1/users HTTP/1.1\r\nHost: highload\r\n\
              Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{\"em",
        )
        .await
        .unwrap();
    stream
}

async fn slow_bodies_hold_no_write_slot_and_are_answered_408(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    // Five times more slow uploads than write slots.
    config.server.http_max_in_flight = 4;
    config.server.http_body_read_timeout = Duration::from_secs(3);
    let app = spawn_app_with(config, data).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(start_slow_upload(app.port).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    for i in 0..10 {
        let created = app
            .post(
                "/api/v1/users",
                &serde_json::json!({
                    "email": format!("writer{i}@example.com"),
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                }),
            )
            .await;
        assert_eq!(created.status(), 201, "write {i} beside 20 slow uploads");
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    for stream in &mut slow {
        let (head, body) = read_response(stream).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(body.contains("urn:highload:problem:body-timeout"), "{body}");
        assert!(
            closed_within(stream, Duration::from_secs(1))
                .await
                .is_some()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn a_client_sending_one_header_byte_per_second_is_disconnected(stack: Stack) {
    let header_read = Duration::from_secs(2);
    let app = spawn_with(stack, header_read, Duration::from_secs(60), None).await;
    let stream = connect(app.port).await;
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let slowloris = tokio::spawn(async move {
        for byte in LIVE {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 1024];
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => started.elapsed(),
            Ok(n) => panic!("answered: {}", String::from_utf8_lossy(&buf[..n])),
        }
    })
    .await
    .expect("a client sending a byte a second still connected after 15 s");
    slowloris.abort();
    assert!(
        closed >= header_read - Duration::from_millis(100) && closed < header_read * 3,
        "closed after {closed:?}, the header-read timeout is {header_read:?}"
    );
}

async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(stack: Stack) {
    // The idle timeout is the shorter here: it is the one that applies.
    let idle = Duration::from_secs(1);
    let app = spawn_with(stack, Duration::from_secs(10), idle, None).await;
    let mut stream = connect(app.port).await;
    stream.write_all(LIVE).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let closed = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("an idle connection still open after 10 s");
    assert!(
        closed >= idle - Duration::from_millis(100) && closed < idle * 4,
        "closed after {closed:?}, the idle timeout is {idle:?}"
    );
}

async fn a_keep_alive_connection_may_wait_longer_than_the_header_timeout_between_requests(
    stack: Stack,
) {
    let header_read = Duration::from_secs(1);
    let app = spawn_with(stack, header_read, Duration::from_secs(10), None).await;
    let mut stream = connect(app.port).await;
    for _ in 0..2 {
        stream.write_all(LIVE).await.unwrap();
        let (head, _) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // Idle for twice the header-read timeout: within the idle timeout.
        tokio::time::sleep(header_read * 2).await;
    }
}

/// Asks `/health/live` on a connection of its own; the status line, or
/// `None` if no answer came within `limit`.
async fn probe_within(port: u16, limit: Duration) -> Option<String> {
    tokio::time::timeout(limit, async {
        let mut stream = connect(port).await;
        stream.write_all(LIVE).await.unwrap();
        let (head, _) = read_response(&mut stream).await;
        head.lines().next().unwrap_or_default().to_owned()
    })
    .await
    .ok()
}

async fn probes_get_in_past_more_slow_heads_than_the_connection_cap(stack: Stack) {
    // Slow heads would hold their slots for a minute.
    let app = spawn_with(
        stack,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Some(50),
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..80 {
        let mut stream = connect(app.port).await;
        stream.write_all(b"GET /health/live HT").await.unwrap();
        slow.push(stream);
    }
    for i in 0..9 {
        let answered = probe_within(app.port, Duration::from_secs(2)).await;
        assert_eq!(
            answered.as_deref(),
            Some("HTTP/1.1 200 OK"),
            "probe {i} beside 80 slow heads at a cap of 50"
        );
    }
    // The ones that waited longest made room.
    assert!(
        closed_within(&mut slow[0], Duration::from_secs(1))
            .await
            .is_some()
    );
}

async fn at_the_cap_with_every_connection_serving_a_new_client_waits_for_a_slot(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    config.listener.max_connections = Some(4);
    let body_read = Duration::from_secs(2);
    config.server.http_body_read_timeout = body_read;
    let app = spawn_app_with(config, data).await;
    // Four uploads in progress: no connection waits for a request.
    let mut uploads = Vec::new();
    for _ in 0..4 {
        uploads.push(start_slow_upload(app.port).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let answered = probe_within(app.port, Duration::from_secs(15)).await;
    let waited = started.elapsed();
    assert_eq!(answered.as_deref(), Some("HTTP/1.1 200 OK"));
    assert!(
        waited >= body_read - Duration::from_millis(500),
        "answered after {waited:?}, before a slot was free"
    );
    for stream in &mut uploads {
        let (head, _) = read_response(stream).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    }
}

async fn shutdown_closes_waiting_connections_and_unfinished_uploads_at_once(stack: Stack) {
    let app = spawn_with(
        stack,
        Duration::from_secs(30),
        Duration::from_secs(60),
        None,
    )
    .await;
    let mut idle = connect(app.port).await;
    idle.write_all(LIVE).await.unwrap();
    read_response(&mut idle).await;
    let mut slow = connect(app.port).await;
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // A POST whose body is half sent: not handled yet, so nothing is lost
    // by closing it (requests being handled finish: see `lifecycle`).
    let mut upload = start_slow_upload(app.port).await;
    eventually(|| async { (app.metrics.http_in_flight.get() == 1).then_some(()) }).await;

    app.shutdown.cancel();
    for stream in [&mut idle, &mut slow, &mut upload] {
        let mut answered = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answered))
            .await
            .expect("a connection without a request being handled still open after shutdown began")
            .ok();
        assert!(
            answered.is_empty(),
            "{}",
            String::from_utf8_lossy(&answered)
        );
    }
    app.stop().await.expect("a clean shutdown");
}

stack_tests!(
    slow_bodies_hold_no_write_slot_and_are_answered_408,
    a_client_sending_one_header_byte_per_second_is_disconnected,
    an_idle_keep_alive_connection_is_closed_after_the_idle_timeout,
    a_keep_alive_connection_may_wait_longer_than_the_header_timeout_between_requests,
    probes_get_in_past_more_slow_heads_than_the_connection_cap,
    at_the_cap_with_every_connection_serving_a_new_client_waits_for_a_slot,
    shutdown_closes_waiting_connections_and_unfinished_uploads_at_once,
);

/// The binary under test: killed if the test fails before stopping it,
/// so that a failure leaves no process behind.
pub(crate) struct Running(pub(crate) std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the binary on a free port with `env` and at most `open_files`
/// file descriptors, its log to `stdout`; waits until it is ready.
pub(crate) async fn start_binary(
    dir: &tempfile::TempDir,
    env: &[(&str, &str)],
    open_files: Option<u64>,
    stdout: Stdio,
) -> (Running, u16) {
    let port = free_port();
    let mut command = highload(dir);
    command
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", port.to_string())
        .stdout(stdout);
    for (name, value) in env {
        command.env(name, value);
    }
    if let Some(open_files) = open_files {
        let limit = libc::rlimit {
            rlim_cur: open_files,
            rlim_max: open_files,
        };
        // SAFETY: setrlimit is async-signal-safe and touches no memory of
        // the parent.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let child = Running(command.spawn().unwrap());
    let client = reqwest::Client::new();
    eventually(|| async {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await;
        ready.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    (child, port)
}

#[tokio::test]
async fn with_few_file_descriptors_slow_clients_do_not_make_the_service_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    // 256 open files, so 192 connections by default; more slow clients
    // than files, as 1,100 were with 1,024 files.
    let log = dir.path().join("highload.log");
    let (mut child, port) = start_binary(
        &dir,
        &[("HTTP_HEADER_READ_TIMEOUT", "2s")],
        Some(256),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = connect(port).await;
        stream.write_all(b"GET /health/live HT").await.unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let client = reqwest::Client::new();
    let live = client
        .get(format!("http://127.0.0.1:{port}/health/live"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("/health/live unreachable with slow clients at the cap");
    assert_eq!(live.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(slow);
    assert_eq!(
        terminate(&mut child.0, Duration::from_secs(20))
            .await
            .code(),
        Some(0)
    );
    // At the cap the listener waits instead of accepting: it never ran out
    // of file descriptors.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(r#""max_connections":192"#), "{log}");
    assert!(!log.contains("failed to accept"), "{log}");
}

#[tokio::test]
async fn sigterm_with_slow_uploads_slow_heads_and_idle_connections_open_exits_zero_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Timeouts far beyond the shutdown deadline (30s): only the shutdown
    // may close these connections in time.
    let (mut child, port) = start_binary(
        &dir,
        &[
            ("HTTP_HEADER_READ_TIMEOUT", "60s"),
            ("HTTP_IDLE_TIMEOUT", "120s"),
            ("HTTP_BODY_READ_TIMEOUT", "60s"),
        ],
        None,
        Stdio::null(),
    )
    .await;
    let mut idle = connect(port).await;
    idle.write_all(LIVE).await.unwrap();
    let (head, _) = read_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut slow = connect(port).await;
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut upload = start_slow_upload(port).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let status = terminate(&mut child.0, Duration::from_secs(40)).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "after {took:?}");
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    for stream in [&mut idle, &mut slow, &mut upload] {
        assert!(
            closed_within(stream, Duration::from_secs(1))
                .await
                .is_some()
        );
    }
}
