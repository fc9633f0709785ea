//! Traces across the pipeline, as an operator sees them: the release binary
//! exports its spans over OTLP/HTTP to a receiver (an in-process fake
//! here), and one trace runs from a client's `traceparent` through the
//! POST, the outbox relay's publish and the worker's processing. The span
//! pipeline is process-wide, so each test runs the binary of its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use prost::Message as _;
use serde_json::{Value, json};

use crate::helpers::{Stack, TestData, eventually, free_port};

crate::stack_tests!(
    one_trace_runs_from_the_client_through_the_relay_to_the_worker,
    spans_reach_an_https_receiver_through_the_ca_they_are_given,
    without_export_nothing_is_sent_and_incoming_trace_ids_are_still_logged,
);

const BINARY: &str = env!("CARGO_BIN_EXE_highload");

/// One exported span, whatever the encoding.
#[derive(Debug, Clone)]
struct ExportedSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    service_name: String,
}

/// Export requests received: content type and body.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// An OTLP/HTTP receiver on a port of its own, keeping every request.
struct Receiver {
    endpoint: String,
    received: Received,
}

impl Receiver {
    async fn start() -> Self {
        let received = Received::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, received }
    }

    /// The receiver over HTTPS, with the certificate and key of `issued`.
    async fn start_https(issued: &crate::tls::Issued) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let received = Received::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&received));
        let certs = CertificateDer::pem_file_iter(&issued.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(app),
                        )
                        .await;
                });
            }
        });
        Self { endpoint, received }
    }

    fn requests(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Every span received so far, decoded.
    fn spans(&self) -> Vec<ExportedSpan> {
        let received = self.received.lock().unwrap().clone();
        received
            .iter()
            .flat_map(|(content_type, body)| match content_type.as_str() {
                "application/json" => spans_from_json(body),
                "application/x-protobuf" => spans_from_protobuf(body),
                other => panic!("unexpected content type {other}"),
            })
            .collect()
    }
}

async fn receive(
    State(received): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    received.lock().unwrap().push((content_type, body));
    ""
}

fn spans_from_json(body: &[u8]) -> Vec<ExportedSpan> {
    let request: Value = serde_json::from_slice(body).expect("OTLP JSON");
    let mut spans = Vec::new();
    for resource in request["resourceSpans"].as_array().expect("resourceSpans") {
        let service_name = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |field: &str| span[field].as_str().unwrap_or_default().to_lowercase();
                spans.push(ExportedSpan {
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    spans
}

fn spans_from_protobuf(body: &[u8]) -> Vec<ExportedSpan> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        let service_name = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(ExportedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    service_name: service_name.clone(),
                });
            }
        }
    }
    spans
}

/// The release binary on a free port, on the test's data, its JSON log
/// lines collected.
struct Service {
    child: Child,
    base: String,
    logs: Arc<Mutex<Vec<Value>>>,
    /// Reads the log lines until the process closes its output.
    reader: Option<std::thread::JoinHandle<()>>,
    _data: Arc<TestData>,
}

impl Service {
    async fn start(stack: Stack, env: &[(&str, &str)]) -> Self {
        let data = TestData::new(stack).await;
        let port = free_port();
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .current_dir(data.dir.path())
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "info,highload=debug")
            .env("OUTBOX_POLL_INTERVAL", "50ms")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((real, name)) = &data.real {
            command
                .env("DATABASE_URL", database_url(name))
                .env("REDIS_URL", &real.redis_url)
                .env("CACHE_PREFIX", format!("{name}:"))
                .env("KAFKA_BROKERS", &real.kafka_brokers)
                .env("KAFKA_TOPIC", name)
                .env("KAFKA_GROUP_ID", name)
                .env("KAFKA_PARTITIONS", "3");
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::clone(&logs);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Kept as a string when it is not JSON, so that it fails
                // the assertions on the log lines rather than this thread.
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                lines.lock().unwrap().push(value);
            }
        });
        let service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            logs,
            reader: Some(reader),
            _data: data,
        };
        let client = reqwest::Client::new();
        eventually(|| async {
            let ready = client.get(service.url("/health/ready")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        })
        .await;
        service
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a user, then posts an event with `traceparent`, and waits
    /// until the worker has counted it; returns the event.
    async fn post_traced_event(&self, traceparent: &str) -> Value {
        let client = reqwest::Client::new();
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let user: Value = client
            .post(self.url("/api/v1/users"))
            .json(&json!({ "email": email, "first_name": "Tra", "last_name": "Ce" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let user_id = user["id"].as_str().expect("a user").to_owned();
        let response = client
            .post(self.url("/api/v1/events"))
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=abc")
            .json(&json!({ "user_id": user_id, "type": "traced", "data": "{}" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let event: Value = response.json().await.unwrap();
        let activity = self.url(&format!("/api/v1/users/{user_id}/activity"));
        eventually(|| async {
            let activity: Value = client.get(&activity).send().await.ok()?.json().await.ok()?;
            (activity["events_by_type"]["traced"] == 1).then_some(())
        })
        .await;
        event
    }

    /// The names of this process's threads.
    fn threads(&self) -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap();
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    /// Log lines with this `trace_id`, by message.
    fn logged_in_trace(&self, trace_id: &str) -> HashMap<String, Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line["trace_id"] == trace_id)
            .map(|line| {
                (
                    line["message"].as_str().unwrap_or_default().to_owned(),
                    line.clone(),
                )
            })
            .collect()
    }

    /// Sends SIGTERM and waits for a clean exit (and the last log lines).
    async fn stop(mut self) -> Vec<Value> {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("no exit within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.code(), Some(0));
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader ends with the output");
        }
        let logs = std::mem::take(&mut *self.logs.lock().unwrap());
        for line in &logs {
            assert!(line.is_object(), "not a JSON log line: {line}");
        }
        logs
    }
}

impl Drop for Service {
    /// A test that failed half-way leaves no process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The one span called `name` among `trace`.
fn named<'a>(trace: &[&'a ExportedSpan], name: &str) -> &'a ExportedSpan {
    let found: Vec<&ExportedSpan> = trace.iter().copied().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in {trace:#?}");
    found[0]
}

/// This test's database, as a URL the binary takes.
fn database_url(name: &str) -> String {
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let (url, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let (server, _) = url
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL names a database");
    match query {
        "" => format!("{server}/{name}"),
        query => format!("{server}/{name}?{query}"),
    }
}

/// A fresh W3C `traceparent`: (header, trace id, span id).
fn client_trace() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = trace_id[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

async fn one_trace_runs_from_the_client_through_the_relay_to_the_worker(stack: Stack) {
    let receiver = Receiver::start().await;
    // Both encodings: JSON on one stack, protocol buffers on the other.
    let protocol = match stack {
        Stack::Embedded => "http/json",
        Stack::Real => "http/protobuf",
    };
    let service = Service::start(
        stack,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "highload-under-test"),
            // Nothing leaves before shutdown: what arrives was flushed by it.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    )
    .await;
    assert!(
        service
            .threads()
            .iter()
            .any(|t| t.starts_with("OpenTelemetry")),
        "the exporter runs: {:?}",
        service.threads()
    );
    let (traceparent, trace_id, client_span) = client_trace();
    service.post_traced_event(&traceparent).await;

    // The JSON log lines of the request and of the worker name the trace.
    let logged = eventually(|| async {
        let logged = service.logged_in_trace(&trace_id);
        (logged.contains_key("request completed") && logged.contains_key("event processed"))
            .then_some(logged)
    })
    .await;
    for line in logged.values() {
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    assert_eq!(receiver.requests(), 0, "batches wait for the schedule");

    let logs = service.stop().await;
    let spans = receiver.spans();
    let trace: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let request = named(&trace, "request");
    let publish = named(&trace, "outbox publish");
    let process = named(&trace, "process event");
    let update = named(&trace, "activity update");
    assert_eq!(
        request.parent_span_id, client_span,
        "continues the client's span"
    );
    assert_eq!(publish.parent_span_id, request.span_id);
    assert_eq!(process.parent_span_id, publish.span_id);
    assert_eq!(update.parent_span_id, process.span_id);
    assert!(
        trace
            .iter()
            .all(|s| s.service_name == "highload-under-test")
    );
    // Without a traceparent (the user's creation), a trace of its own starts.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "request" && s.trace_id != trace_id && s.parent_span_id.is_empty()),
        "{spans:#?}"
    );
    assert!(
        logs.iter().any(|l| l["message"] == "spans exported"),
        "flushed in the drain"
    );
}

/// A collector reached over HTTPS (as managed ones are): with the CA that
/// signed its certificate, spans arrive; with the system's CAs alone, the
/// export fails, the log says why, and requests are served all the same.
async fn spans_reach_an_https_receiver_through_the_ca_they_are_given(stack: Stack) {
    let pki = crate::tls::Pki::new();
    let receiver =
        Receiver::start_https(&pki.issue("collector", "collector", &["localhost"])).await;
    let ca = pki.ca.to_str().unwrap();
    let settings = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20collector-secret",
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];

    let trusting = Service::start(
        stack,
        &[&settings[..], &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca)]].concat(),
    )
    .await;
    let (traceparent, trace_id, _) = client_trace();
    trusting.post_traced_event(&traceparent).await;
    eventually(|| async {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|s| s.trace_id == trace_id && s.name == "process event")
            .then_some(())
    })
    .await;
    let logs = trusting.stop().await;
    assert!(
        !logs
            .iter()
            .any(|l| l["message"] == "failed to export spans"),
        "every export arrived"
    );

    let received = receiver.requests();
    let untrusting = Service::start(stack, &settings).await;
    let (traceparent, _, _) = client_trace();
    untrusting.post_traced_event(&traceparent).await;
    let refused = eventually(|| async {
        let logs = untrusting.logs.lock().unwrap().clone();
        logs.into_iter()
            .find(|l| l["message"] == "failed to export spans")
    })
    .await;
    let reason = refused["error"].as_str().unwrap_or_default();
    assert!(reason.contains("certificate"), "{refused}");
    assert!(!reason.contains("collector-secret"), "{refused}");
    assert_eq!(
        receiver.requests(),
        received,
        "nothing passed without the CA"
    );
}

async fn without_export_nothing_is_sent_and_incoming_trace_ids_are_still_logged(stack: Stack) {
    let receiver = Receiver::start().await;
    // Export turned off explicitly, with an endpoint set, and not configured
    // at all: no exporter runs, nothing is sent.
    for env in [
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
        ][..],
        &[][..],
    ] {
        let service = Service::start(stack, env).await;
        assert!(
            !service
                .threads()
                .iter()
                .any(|t| t.starts_with("OpenTelemetry")),
            "no exporter runs: {:?}",
            service.threads()
        );
        let (traceparent, trace_id, _) = client_trace();
        service.post_traced_event(&traceparent).await;
        let logged = eventually(|| async {
            let logged = service.logged_in_trace(&trace_id);
            (logged.contains_key("request completed") && logged.contains_key("event processed"))
                .then_some(logged)
        })
        .await;
        // Only the caller's trace id: no span of ours exists to name.
        assert!(logged.values().all(|line| line.get("span_id").is_none()));
        service.stop().await;
    }
    assert_eq!(receiver.requests(), 0);
}
