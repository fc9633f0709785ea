//! HTTPS for the listener: a certificate chain and key from PEM files,
//! loaded again when either file changes.
//!
//! Every handshake asks [`Tls`] for the pair in use, so a renewed
//! certificate serves new connections without a restart while open ones
//! keep theirs. The files are polled (modification time, length, inode)
//! every `SERVER_TLS_RELOAD_INTERVAL`; that also sees a Kubernetes secret
//! volume, which swaps a symbolic link. A pair that fails to load (a file
//! half written, a key that does not fit the certificate) is logged and the
//! pair in use stays; it is tried again when the files change again.
//!
//! Only rustls' `ring` provider is used, and it is passed explicitly, so
//! nothing depends on a process-wide default provider.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ListenerTlsConfig;

/// The listener's TLS: the acceptor, and the certificate it serves.
pub(super) struct Tls {
    acceptor: TlsAcceptor,
    certificate: Arc<Certificate>,
}

impl Tls {
    /// Loads the certificate and key; an error names the file and the
    /// variable that points at it.
    pub(super) fn load(config: &ListenerTlsConfig) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let version = Version::read(config).context("failed to read the certificate files")?;
        let pair = load_pair(config, &provider)?;
        let certificate = Arc::new(Certificate {
            config: config.clone(),
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(Some(version)),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no protocol version")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certificate,
        })
    }

    pub(super) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Checks the files every reload interval until `token` is cancelled.
    pub(super) async fn run_reload_until_stopped(self: Arc<Self>, token: CancellationToken) {
        let mut ticks = tokio::time::interval(self.certificate.config.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the files were read at start.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = ticks.tick() => self.certificate.reload_if_changed(),
            }
        }
    }
}

/// The certificate and key in use, and what is known of their files.
struct Certificate {
    config: ListenerTlsConfig,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' version last tried (loaded or not); `None` when they could
    /// not be read. A failure is logged once per version.
    seen: Mutex<Option<Version>>,
}

impl Certificate {
    fn reload_if_changed(&self) {
        let version = Version::read(&self.config);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let version = match version {
            Ok(version) if seen.as_ref() == Some(&version) => return,
            Ok(version) => version,
            Err(err) => {
                if seen.take().is_some() {
                    tracing::error!(
                        error = format!("{err:#}"),
                        "cannot read the certificate files; serving the previous certificate"
                    );
                }
                return;
            }
        };
        *seen = Some(version);
        match load_pair(&self.config, &self.provider) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
                tracing::info!(
                    cert_file = %self.config.cert_file.display(),
                    "loaded a new certificate"
                );
            }
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "failed to load the changed certificate; serving the previous one"
            ),
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_file", &self.config.cert_file)
            .field("key_file", &self.config.key_file)
            .finish_non_exhaustive()
    }
}

/// What tells one version of the two files from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    cert: FileVersion,
    key: FileVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

impl Version {
    fn read(config: &ListenerTlsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            cert: FileVersion::read(&config.cert_file, "SERVER_TLS_CERT_FILE")?,
            key: FileVersion::read(&config.key_file, "SERVER_TLS_KEY_FILE")?,
        })
    }
}

impl FileVersion {
    fn read(path: &Path, variable: &str) -> anyhow::Result<Self> {
        // Follows symbolic links: a swapped link is a changed file.
        let metadata = std::fs::metadata(path)
            .with_context(|| format!("failed to read {} ({variable})", path.display()))?;
        Ok(Self {
            modified: metadata.modified()?,
            len: metadata.len(),
            inode: metadata.ino(),
        })
    }
}

/// Reads and checks the pair: the chain parses, the key parses and fits
/// the chain's first certificate.
fn load_pair(
    config: &ListenerTlsConfig,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let (cert_file, key_file) = (&config.cert_file, &config.key_file);
    let cert_pem = std::fs::read(cert_file).with_context(|| {
        format!(
            "failed to read {} (SERVER_TLS_CERT_FILE)",
            cert_file.display()
        )
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "{} (SERVER_TLS_CERT_FILE) is not a PEM certificate chain",
                cert_file.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!(
            "{} (SERVER_TLS_CERT_FILE) holds no certificate",
            cert_file.display()
        );
    }
    let key_pem = std::fs::read(key_file).with_context(|| {
        format!(
            "failed to read {} (SERVER_TLS_KEY_FILE)",
            key_file.display()
        )
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| {
        format!(
            "{} (SERVER_TLS_KEY_FILE) is not a PEM private key",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "the key in {} (SERVER_TLS_KEY_FILE) does not fit the certificate in {} \
             (SERVER_TLS_CERT_FILE)",
            key_file.display(),
            cert_file.display()
        )
    })
}
