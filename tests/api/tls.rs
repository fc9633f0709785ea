//! TLS to the backends, end to end: the smoke path (`scripts/smoke.sh`)
//! against an app whose PostgreSQL and Redis speak only TLS, with
//! certificates from a CA the test makes, checked in full (verify-full,
//! rediss://) and with client certificates; and what an operator sees when
//! the server's certificate names another host.
//!
//! Each test starts its own servers from the machine's binaries (initdb and
//! pg_ctl, redis-server) in a temp dir, and stops them when it ends. Like
//! the real-stack tests they are ignored unless asked for
//! (`--include-ignored`); asked for, a missing binary fails them.
//! `TEST_PORTS=first-last` keeps their ports in a range.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use highload::config::{Config, DatabaseBackend};
use highload::startup::Application;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::helpers::{Stack, TestData, eventually, free_port, spawn_app_with};

/// A CA and the certificates it issues, as PEM files in a temp dir.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
    /// The CA's certificate.
    pub(crate) ca: PathBuf,
}

/// A certificate and its key, as files.
pub(crate) struct Issued {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "highload test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        Self {
            dir,
            ca_params,
            ca_key,
            ca,
        }
    }

    /// A certificate for `names` (host names or IP addresses) with common
    /// name `common_name`, signed by the CA.
    pub(crate) fn issue(&self, file: &str, common_name: &str, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.crt")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A port for a server the test starts: from `TEST_PORTS` (`first-last`)
/// when set, else any free one.
fn server_port() -> u16 {
    let Ok(range) = std::env::var("TEST_PORTS") else {
        return free_port();
    };
    let (first, last) = range
        .split_once('-')
        .and_then(|(first, last)| Some((first.parse::<u16>().ok()?, last.parse::<u16>().ok()?)))
        .expect("TEST_PORTS is first-last");
    // Tests run in parallel: start at a different place in the range.
    let offset = (std::process::id() as u16).wrapping_add(rand_u16());
    let span: u16 = last - first + 1;
    (0..span)
        .map(|i| first + (offset.wrapping_add(i)) % span)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in TEST_PORTS")
}

fn rand_u16() -> u16 {
    uuid::Uuid::new_v4().as_u128() as u16
}

/// Runs `command`, failing the test with its output when it fails.
fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The directory holding initdb and pg_ctl: Debian's newest, else PATH's.
fn postgres_bin_dir() -> PathBuf {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    debian.sort_by_key(|bin| {
        let version = bin.parent().and_then(|p| p.file_name()).unwrap_or_default();
        version.to_string_lossy().parse::<u32>().unwrap_or(0)
    });
    if let Some(bin) = debian.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .expect(
            "initdb and pg_ctl are needed for the TLS tests: apt-get install postgresql \
             (they are looked for in /usr/lib/postgresql/*/bin and on PATH)",
        )
}

/// A PostgreSQL that accepts only TLS connections with a client
/// certificate from the test's CA (`hostssl ... clientcert=verify-ca`),
/// stopped when dropped.
struct TlsPostgres {
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// PostgreSQL refuses to run as root: as root, run it as this user.
    user: Option<&'static str>,
}

impl TlsPostgres {
    async fn start(pki: &Pki, server: &Issued) -> Self {
        let bin = postgres_bin_dir();
        let user = (unsafe { libc::geteuid() } == 0).then_some("postgres");
        let postgres = Self {
            port: server_port(),
            dir: tempfile::tempdir().unwrap(),
            bin,
            user,
        };
        let data = postgres.data();
        if let Some(user) = user {
            run(
                Command::new("chown").args([user, path(postgres.dir.path())]),
                "chown of the PostgreSQL directory",
            );
        }
        run(
            &mut postgres.command(
                "initdb",
                &[
                    "-D",
                    path(&data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                ],
            ),
            "initdb",
        );
        for (from, to) in [
            (&server.cert, "server.crt"),
            (&server.key, "server.key"),
            (&pki.ca, "root.crt"),
        ] {
            std::fs::copy(from, data.join(to)).unwrap();
        }
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'root.crt'\nfsync = off\n",
            port = postgres.port,
            dir = path(postgres.dir.path()),
        );
        append(&data.join("postgresql.conf"), &settings);
        // TLS with a client certificate, or nothing (over TCP).
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n",
        )
        .unwrap();
        if let Some(user) = user {
            run(
                Command::new("chown").args(["-R", user, path(&data)]),
                "chown of the PostgreSQL files",
            );
        }
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let log = postgres.dir.path().join("postgres.log");
        run(
            &mut postgres.command(
                "pg_ctl",
                &[
                    "-D",
                    path(&data),
                    "-l",
                    path(&log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ),
            "pg_ctl start",
        );
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.args(args).stdin(Stdio::null());
        command
    }

    /// How the test itself reaches the server: verify-full, with the
    /// client certificate.
    fn options(&self, pki: &Pki, client: &Issued) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres")
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(&pki.ca)
            .ssl_client_cert(&client.cert)
            .ssl_client_key(&client.key)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl", &["-D", path(&data), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A Redis that listens only for TLS, and wants a client certificate from
/// the test's CA; stopped when dropped.
struct TlsRedis {
    port: u16,
    child: std::process::Child,
}

impl TlsRedis {
    async fn start(pki: &Pki, server: &Issued) -> Self {
        let port = server_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", path(&server.cert)])
            .args(["--tls-key-file", path(&server.key)])
            .args(["--tls-ca-cert-file", path(&pki.ca)])
            .args(["--tls-auth-clients", "yes"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is needed for the TLS tests: apt-get install redis-server");
        let child = std::sync::Mutex::new(child);
        eventually(|| async {
            if let Ok(Some(status)) = child.lock().unwrap().try_wait() {
                panic!("redis-server exited ({status}): was it built with TLS?");
            }
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
                .then_some(())
        })
        .await;
        Self {
            port,
            child: child.into_inner().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    /// The keys under `prefix`, read over TLS with the client certificate.
    async fn keys(&self, pki: &Pki, client: &Issued, prefix: &str) -> Vec<String> {
        let certificates = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(&client.cert).unwrap(),
                client_key: std::fs::read(&client.key).unwrap(),
            }),
            root_cert: Some(std::fs::read(&pki.ca).unwrap()),
        };
        let client = redis::Client::build_with_tls(self.url(), certificates).unwrap();
        let mut connection = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("redis answers")
        .expect("the test connects over TLS");
        redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut connection)
            .await
            .unwrap()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app's configuration from `args`, as the environment would give
/// them, on port 0; the bus (and, without PostgreSQL, the store) embedded.
fn app_config(data: &TestData, args: &[&str]) -> Config {
    let mut config =
        Config::try_parse_from(std::iter::once("highload").chain(args.iter().copied()))
            .expect("the TLS settings are accepted");
    config.server.server_host = "127.0.0.1".into();
    config.server.server_port = 0;
    config.server.shutdown_timeout = Duration::from_secs(20);
    config.bus.kafka = None;
    config.bus.outbox_poll_interval = Duration::from_millis(50);
    if let DatabaseBackend::Sqlite(_) = config.database.backend {
        config.database.backend = DatabaseBackend::Sqlite(data.dir.path().join("highload.db"));
    }
    config
}

/// Runs `scripts/smoke.sh` (every endpoint, checked) against `address`.
async fn smoke(address: &str) {
    let address = address.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smoke.sh"))
            .arg(address)
            .output()
            .expect("bash runs scripts/smoke.sh")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "scripts/smoke.sh failed (it needs curl and jq):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own PostgreSQL with TLS (initdb, pg_ctl): cargo test -- --include-ignored"]
async fn the_smoke_path_runs_on_a_postgres_checked_with_verify_full_and_a_client_certificate() {
    let pki = Pki::new();
    let server = pki.issue("postgres", "postgres", &["127.0.0.1"]);
    let client = pki.issue("client", "highload", &[]);
    let postgres = TlsPostgres::start(&pki, &server).await;
    let data = TestData::new(Stack::Embedded).await;
    let port = postgres.port.to_string();
    let config = app_config(
        &data,
        &[
            "--db-host",
            "127.0.0.1",
            "--db-port",
            port.as_str(),
            "--db-name",
            "postgres",
            "--db-sslmode",
            "verify-full",
            "--db-sslrootcert",
            path(&pki.ca),
            "--db-sslcert",
            path(&client.cert),
            "--db-sslkey",
            path(&client.key),
        ],
    );
    let app = spawn_app_with(config, data).await;

    smoke(&app.address).await;
    let user = app.create_user().await;

    // The user is stored in that server, and each of the app's connections
    // is TLS with the client certificate.
    let pool = sqlx::PgPool::connect_with(postgres.options(&pki, &client))
        .await
        .expect("the test connects with verify-full");
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1::uuid")
        .bind(user["id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .expect("the user is stored");
    assert_eq!(email, user["email"].as_str().unwrap());
    let connections: Vec<(bool, Option<String>)> = sqlx::query_as(
        "SELECT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!connections.is_empty(), "the app holds connections");
    for (ssl, client_dn) in &connections {
        assert!(ssl, "{connections:?}");
        assert_eq!(
            client_dn.as_deref(),
            Some("/CN=highload"),
            "{connections:?}"
        );
    }
    pool.close().await;
    app.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own PostgreSQL with TLS (initdb, pg_ctl): cargo test -- --include-ignored"]
async fn verify_full_and_verify_ca_refuse_a_certificate_for_another_host_and_say_so() {
    let pki = Pki::new();
    let server = pki.issue("postgres", "postgres", &["db.example.com"]);
    let client = pki.issue("client", "highload", &[]);
    let postgres = TlsPostgres::start(&pki, &server).await;
    let data = TestData::new(Stack::Embedded).await;
    let port = postgres.port.to_string();
    let args = |mode: &'static str| {
        [
            "--db-host",
            "127.0.0.1",
            "--db-port",
            port.as_str(),
            "--db-name",
            "postgres",
            "--db-sslmode",
            mode,
            "--db-sslrootcert",
            path(&pki.ca),
            "--db-sslcert",
            path(&client.cert),
            "--db-sslkey",
            path(&client.key),
            "--health-detail",
            "true",
        ]
        .map(str::to_owned)
    };
    for mode in ["verify-full", "verify-ca"] {
        // verify-ca would check the chain only, but the driver checks the
        // name as well (README, "TLS to the backends"): the same server is
        // refused in both modes, not silently accepted.
        let arguments = args(mode);
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        let app = Application::build(app_config(&data, &arguments))
            .await
            .expect("the app starts; the database is reported down");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run_until_stopped());

        let client_http = reqwest::Client::new();
        let body: Value = eventually(|| async {
            let response = client_http
                .get(format!("{address}/health"))
                .send()
                .await
                .ok()?;
            let status = response.status();
            let body: Value = response.json().await.ok()?;
            (status == 503 && body["checks"]["database"]["error"].is_string()).then_some(body)
        })
        .await;
        let error = body["checks"]["database"]["error"].as_str().unwrap();
        assert!(
            error.contains("certificate") && error.contains("not valid for name"),
            "{mode}: the error names the certificate's name mismatch: {error}"
        );
        let ready = client_http
            .get(format!("{address}/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            ready.status(),
            503,
            "{mode}: not ready without its database"
        );
        // The API answers 503, naming the database, until the store is ready.
        let list = client_http
            .get(format!("{address}/api/v1/users"))
            .send()
            .await
            .unwrap();
        assert_eq!(list.status(), 503, "{mode}: no API without its database");
        let problem: Value = list.json().await.unwrap();
        assert_eq!(
            problem["detail"], "the database is not ready yet; retry shortly",
            "{mode}: the 503 says why"
        );
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own Redis with TLS (redis-server): cargo test -- --include-ignored"]
async fn the_smoke_path_runs_on_a_rediss_url_with_the_test_ca_and_a_client_certificate() {
    let pki = Pki::new();
    let server = pki.issue("redis", "redis", &["127.0.0.1"]);
    let client = pki.issue("client", "highload", &[]);
    let redis = TlsRedis::start(&pki, &server).await;
    let data = TestData::new(Stack::Embedded).await;
    let prefix = format!("tls_{}:", uuid::Uuid::new_v4().simple());
    let config = app_config(
        &data,
        &[
            "--redis-url",
            redis.url().as_str(),
            "--redis-tls-ca-file",
            path(&pki.ca),
            "--redis-tls-cert-file",
            path(&client.cert),
            "--redis-tls-key-file",
            path(&client.key),
            "--cache-prefix",
            prefix.as_str(),
            "--health-detail",
            "true",
        ],
    );
    let app = spawn_app_with(config, data).await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["cache"]["status"], "healthy", "{health}");
    assert_eq!(health["checks"]["cache"]["backend"], "redis", "{health}");

    smoke(&app.address).await;
    // A user read twice is cached in that Redis.
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    for _ in 0..2 {
        assert_eq!(app.get(&path).await.status(), 200);
    }
    let keys = redis.keys(&pki, &client, &prefix).await;
    assert!(
        keys.iter()
            .any(|key| key.contains(user["id"].as_str().unwrap())),
        "the user is cached over TLS: {keys:?}"
    );
    app.stop().await.expect("clean shutdown");
}
