//! HTTPS on the listener: the configured certificate is served, a replaced
//! one is served within the reload interval, a bad replacement keeps the
//! one in use, and the certificate settings come in pairs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use highload::config::{Config, ListenerTlsConfig};
use highload::startup::Application;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Stack, TestData, eventually, test_config};
use crate::stack_tests;

/// The name the test certificates are issued for.
pub(crate) const HOST: &str = "highload.test";

const RELOAD_INTERVAL: Duration = Duration::from_millis(200);

/// A certificate authority made for the test.
pub(crate) struct Authority {
    certificate: Certificate,
    params: CertificateParams,
    key: KeyPair,
}

/// A server certificate and its key, in PEM, and the certificate in DER.
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    der: Vec<u8>,
}

impl Authority {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "highload test authority");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).unwrap();
        Self {
            certificate,
            params,
            key,
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// A new certificate for [`HOST`], with a new key.
    pub(crate) fn issue(&self) -> Issued {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![HOST.to_owned()]).unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer).unwrap();
        Issued {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            der: certificate.der().to_vec(),
        }
    }
}

/// The certificate files the app reads.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Self {
        Self {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    /// Replaces both files, each at once (written aside, then renamed).
    fn write(&self, cert_pem: &str, key_pem: &str) {
        for (path, pem) in [(&self.key, key_pem), (&self.cert, cert_pem)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, pem).unwrap();
            std::fs::rename(&aside, path).unwrap();
        }
    }

    fn install(&self, issued: &Issued) {
        self.write(&issued.cert_pem, &issued.key_pem);
    }

    fn config(&self) -> ListenerTlsConfig {
        ListenerTlsConfig {
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            reload_interval: RELOAD_INTERVAL,
        }
    }
}

/// An app serving HTTPS, and what its clients trust.
struct HttpsApp {
    port: u16,
    authority_pem: String,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    _data: Arc<TestData>,
}

impl HttpsApp {
    async fn spawn(config: Config, data: Arc<TestData>, authority: &Authority) -> Self {
        let app = Application::build(config).await.expect("the app builds");
        let port = app.port();
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run_until_stopped());
        let app = Self {
            port,
            authority_pem: authority.pem(),
            shutdown,
            handle,
            _data: data,
        };
        eventually(|| async {
            let ready = app.client().get(app.url("/health/ready")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        })
        .await;
        app
    }

    /// A client of its own, trusting only the test's authority: a client
    /// resumes its earlier TLS sessions, which keep the certificate they
    /// began with.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.authority_pem.as_bytes()).unwrap(),
            )
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .tls_info(true)
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.port)
    }

    /// The certificate a new client is served (after a 200 from
    /// `/health/live` through it).
    async fn served_certificate(&self) -> Vec<u8> {
        let response = self
            .client()
            .get(self.url("/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(reqwest::tls::TlsInfo::peer_certificate)
            .expect("the TLS information of the connection")
            .to_vec()
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.expect("the app task does not panic")
    }
}

async fn https_serves_the_certificate_and_a_replaced_one_within_the_reload_interval(stack: Stack) {
    let authority = Authority::new();
    let data = TestData::new(stack).await;
    let files = Files::new(data.dir.path());
    let first = authority.issue();
    files.install(&first);
    let mut config = test_config(&data);
    config.listener.tls = Some(files.config());
    let app = HttpsApp::spawn(config, data, &authority).await;

    assert_eq!(app.served_certificate().await, first.der);
    let created = app
        .client()
        .post(app.url("/api/v1/users"))
        .json(&serde_json::json!({ "email": "tls@example.com", "first_name": "T", "last_name": "Ls" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let second = authority.issue();
    files.install(&second);
    let replaced = Instant::now();
    eventually(|| async { (app.served_certificate().await == second.der).then_some(()) }).await;
    let took = replaced.elapsed();
    assert!(
        took < RELOAD_INTERVAL * 5,
        "the new certificate was served after {took:?}; the reload interval is {RELOAD_INTERVAL:?}"
    );

    // A bad replacement (garbage, then a key of another certificate) keeps
    // the certificate in use.
    let third = authority.issue();
    files.write("not a certificate", &third.key_pem);
    tokio::time::sleep(RELOAD_INTERVAL * 3).await;
    assert_eq!(app.served_certificate().await, second.der);
    files.write(&third.cert_pem, &second.key_pem);
    tokio::time::sleep(RELOAD_INTERVAL * 3).await;
    assert_eq!(app.served_certificate().await, second.der);
    // Repaired: served again.
    files.install(&third);
    eventually(|| async { (app.served_certificate().await == third.der).then_some(()) }).await;

    app.stop().await.expect("a clean shutdown");
}

stack_tests!(https_serves_the_certificate_and_a_replaced_one_within_the_reload_interval);

/// The image's health check, `highload healthcheck`, against a service
/// serving HTTPS: it follows SERVER_TLS_CERT_FILE and accepts exactly the
/// certificate in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_subcommand_speaks_https_with_the_served_certificate() {
    let authority = Authority::new();
    let data = TestData::new(Stack::Embedded).await;
    let files = Files::new(data.dir.path());
    files.install(&authority.issue());
    let mut config = test_config(&data);
    config.listener.tls = Some(files.config());
    let other = data.dir.path().join("other.crt");
    std::fs::write(&other, authority.issue().cert_pem).unwrap();
    let app = HttpsApp::spawn(config, data, &authority).await;

    // Blocking: the app serves from the runtime's other thread meanwhile.
    let healthcheck = |cert: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_highload"));
        command
            .args(["healthcheck", "--ready"])
            .env_clear()
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", app.port.to_string());
        if let Some(cert) = cert {
            command.env("SERVER_TLS_CERT_FILE", cert);
        }
        let output = command.output().expect("the binary runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = healthcheck(Some(&files.cert));
    assert_eq!(code, Some(0), "{stderr}");
    // Another certificate than the one served: refused, and said so.
    let (code, stderr) = healthcheck(Some(&other));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("another certificate"), "{stderr}");
    // Plain HTTP to an HTTPS port gets no 200.
    let (code, stderr) = healthcheck(None);
    assert_eq!(code, Some(1), "{stderr}");

    app.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn the_certificate_settings_come_in_pairs_and_a_bad_file_stops_startup() {
    let err = Config::try_parse_from(["highload", "--server-tls-cert-file", "tls.crt"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("SERVER_TLS_KEY_FILE"), "{err}");
    let err = Config::try_parse_from(["highload", "--server-tls-key-file", "tls.key"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("SERVER_TLS_CERT_FILE"), "{err}");

    let authority = Authority::new();
    let data = TestData::new(Stack::Embedded).await;
    let files = Files::new(data.dir.path());
    let issued = authority.issue();
    let other_key = authority.issue().key_pem;
    for (cert, key, variable) in [
        ("", issued.key_pem.as_str(), "SERVER_TLS_CERT_FILE"),
        (
            issued.cert_pem.as_str(),
            "-----BEGIN",
            "SERVER_TLS_KEY_FILE",
        ),
        (
            issued.cert_pem.as_str(),
            other_key.as_str(),
            "SERVER_TLS_KEY_FILE",
        ),
    ] {
        files.write(cert, key);
        let mut config = test_config(&data);
        config.listener.tls = Some(files.config());
        let err = match Application::build(config).await {
            Ok(_) => panic!("started with a bad certificate pair ({variable})"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains(variable), "{err}");
    }
}
