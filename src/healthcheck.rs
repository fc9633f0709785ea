//! `highload healthcheck`: the container image's health check, made by the
//! binary itself so that the image needs no shell or curl. It asks the
//! running service on this host for `/health/live` (or `/health/ready` with
//! `--ready`) and exits 0 on a 200, 1 otherwise, saying why on stderr.
//!
//! When the service serves HTTPS (`SERVER_TLS_CERT_FILE`), so does the
//! check. It connects by address, not by the name the certificate is for,
//! so instead of checking the name it accepts exactly the certificate in
//! that file: the one the service on this host serves.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Checks that the service on this host answers `/health/live` (or
/// `/health/ready`); exits 0 if it does, 1 otherwise.
#[derive(Debug, Parser)]
#[command(name = "highload healthcheck")]
pub struct Args {
    /// Check readiness (`/health/ready`) instead of liveness
    #[arg(long)]
    ready: bool,

    /// The address the service listens on; a wildcard is reached on loopback
    #[arg(long, env = "SERVER_HOST", default_value = "0.0.0.0")]
    server_host: String,

    /// The port the service listens on
    #[arg(long, env = "SERVER_PORT", default_value_t = 8080)]
    server_port: u16,

    /// The certificate the service serves HTTPS with; set: the check speaks HTTPS and accepts
    /// exactly this certificate
    #[arg(long, env = "SERVER_TLS_CERT_FILE")]
    server_tls_cert_file: Option<PathBuf>,
}

/// `highload healthcheck [--ready]`: `args` are the ones after the
/// subcommand's name. Reads `.env` as the service does.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let _ = dotenvy::dotenv();
    let args = Args::parse_from(std::iter::once("highload healthcheck".into()).chain(args));
    let mut check = Check::new(&args.server_host, args.server_port, args.ready);
    if let Some(path) = &args.server_tls_cert_file {
        match CertificateDer::from_pem_file(path) {
            Ok(certificate) => check.tls = Some(certificate),
            Err(err) => {
                eprintln!(
                    "unhealthy: cannot read SERVER_TLS_CERT_FILE {}: {err}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    match check.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("unhealthy: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long the whole check may take: Docker's own timeout is 3 s.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What to check: the service listening on `host`:`port`.
pub struct Check {
    pub host: IpAddr,
    pub port: u16,
    pub ready: bool,
    /// HTTPS, accepting only this certificate (the service's own).
    pub tls: Option<CertificateDer<'static>>,
}

impl Check {
    /// The address the service listens on, as `SERVER_HOST` and
    /// `SERVER_PORT` say; a wildcard address is reached on loopback.
    pub fn new(server_host: &str, port: u16, ready: bool) -> Self {
        let host = match server_host.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ip,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        Self {
            host,
            port,
            ready,
            tls: None,
        }
    }

    fn path(&self) -> &'static str {
        if self.ready {
            "/health/ready"
        } else {
            "/health/live"
        }
    }

    /// Ok when the service answers 200; else what went wrong.
    pub fn run(&self) -> Result<(), String> {
        let addr = SocketAddr::new(self.host, self.port);
        let path = self.path();
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream.set_write_timeout(Some(TIMEOUT)).ok();
        match &self.tls {
            None => ask(stream, addr, path),
            Some(certificate) => {
                let connection = client_for(certificate.clone(), self.host)
                    .map_err(|err| format!("cannot set up TLS to {addr}: {err}"))?;
                ask(rustls::StreamOwned::new(connection, stream), addr, path)
            }
        }
    }
}

/// Sends the request on `stream` and reads the status line.
fn ask(mut stream: impl Read + Write, addr: SocketAddr, path: &str) -> Result<(), String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: highload-healthcheck\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("cannot send the request to {addr}: {err}"))?;
    // The status line is all that matters; read a bounded prefix.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) => return Err(format!("no answer from {addr}{path}: {err}")),
        }
        if head[..read].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let status = line.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{addr}{path} answered {status}"))
    }
}

/// A TLS client that accepts `certificate` and nothing else.
fn client_for(
    certificate: CertificateDer<'static>,
    host: IpAddr,
) -> Result<rustls::ClientConnection, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            certificate,
            provider,
        }))
        .with_no_client_auth();
    rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(host.into()))
}

/// Accepts the one certificate the service is configured to serve, whose
/// signatures are still checked.
#[derive(Debug)]
struct Pinned {
    certificate: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the service serves another certificate than SERVER_TLS_CERT_FILE".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A one-shot server answering `response` to whatever it is asked.
    fn serve(response: &'static str) -> (u16, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 512];
            let n = conn.read(&mut request).unwrap();
            conn.write_all(response.as_bytes()).unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (port, handle)
    }

    #[test]
    fn a_200_is_healthy_and_the_path_follows_the_flag() {
        let (port, server) = serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(Check::new("0.0.0.0", port, false).run(), Ok(()));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /health/live HTTP/1.1\r\n")
        );

        let (port, server) = serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(Check::new("127.0.0.1", port, true).run(), Ok(()));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /health/ready HTTP/1.1\r\n")
        );
    }

    #[test]
    fn anything_else_is_unhealthy_and_says_why() {
        let (port, server) = serve("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let err = Check::new("0.0.0.0", port, true).run().unwrap_err();
        assert!(err.ends_with("/health/ready answered 503"), "{err}");
        server.join().unwrap();

        // Nothing listening: a closed port.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Check::new("0.0.0.0", port, false).run().unwrap_err();
        assert!(err.starts_with("cannot connect to 127.0.0.1:"), "{err}");
    }
}
