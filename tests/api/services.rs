//! Private servers for the outage tests, which stop and start them: an
//! Apache Kafka broker and a Redis, each on a free port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{eventually, free_port};

async fn wait_for_port(port: u16) {
    eventually(|| async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
            .then_some(())
    })
    .await;
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

/// How long a broker may take to listen: a JVM's start, and after a crash
/// the recovery of its logs.
const BROKER_START: Duration = Duration::from_secs(60);

/// An Apache Kafka node of its own (`scripts/kafka.sh node`: broker and
/// controller in one process), whose storage survives `stop`.
pub(crate) struct PrivateBroker {
    pub port: u16,
    controller_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateBroker {
    pub(crate) async fn start() -> Self {
        let port = free_port();
        let controller_port = std::iter::repeat_with(free_port)
            .find(|other| *other != port)
            .unwrap();
        let mut broker = Self {
            port,
            controller_port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        broker.resume().await;
        broker
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker again on the same ports and storage. The script
    /// execs the JVM, so the child is the broker itself.
    pub(crate) async fn resume(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
        let log = std::fs::File::create(self.dir.path().join("broker.log")).unwrap();
        let child = Command::new(script)
            .arg("node")
            .arg(self.dir.path().join("node"))
            .args(["--port", &self.port.to_string()])
            .args(["--controller-port", &self.controller_port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("scripts/kafka.sh starts (it needs java and mvn)");
        self.child = Some(child);
        let listening = async {
            while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(BROKER_START, listening).await.is_err() {
            let log =
                std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(30).collect();
            panic!(
                "the broker did not listen on {} within {BROKER_START:?}; its log ends:\n{}",
                self.port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Kills the broker (as a crash would).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis server that keeps nothing on disk.
pub(crate) struct PrivateRedis {
    pub port: u16,
    child: Child,
}

impl PrivateRedis {
    pub(crate) async fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        wait_for_port(port).await;
        Self { port, child }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Freezes the server: connections stay open, nothing answers.
    pub(crate) fn pause(&self) {
        signal(&self.child, "STOP");
    }

    pub(crate) fn resume(&self) {
        signal(&self.child, "CONT");
    }

    /// Reads a key directly.
    pub(crate) async fn get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("redis answers")
        .unwrap();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = signal_quietly(&self.child);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resumes a paused server so that it can be killed cleanly.
fn signal_quietly(child: &Child) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .stderr(Stdio::null())
        .status()
}
