//! `highload healthcheck`: the container image's health check, made by the
//! binary itself so that the image needs no shell or curl. It asks the
//! running service on this host for `/health/live` (or `/health/ready` with
//! `--ready`) and exits 0 on a 200, 1 otherwise, saying why on stderr.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

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
}

/// `highload healthcheck [--ready]`: `args` are the ones after the
/// subcommand's name. Reads `.env` as the service does.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let _ = dotenvy::dotenv();
    let args = Args::parse_from(std::iter::once("highload healthcheck".into()).chain(args));
    match Check::new(&args.server_host, args.server_port, args.ready).run() {
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
}

impl Check {
    /// The address the service listens on, as `SERVER_HOST` and
    /// `SERVER_PORT` say; a wildcard address is reached on loopback.
    pub fn new(server_host: &str, port: u16, ready: bool) -> Self {
        let host = match server_host.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ip,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        Self { host, port, ready }
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
        let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream.set_write_timeout(Some(TIMEOUT)).ok();
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
