//! TLS to the backends: one crypto provider for the process, and the
//! certificate and key files of the configuration, read and checked at
//! start-up.
//!
//! PostgreSQL (sqlx) and Redis speak TLS through rustls with the *ring*
//! provider, and nothing else is compiled in (no aws-lc-rs, no system
//! OpenSSL). Kafka is the exception: librdkafka brings its own OpenSSL,
//! compiled from source, and reads its files itself.
//!
//! The files are checked when the configuration is loaded, so that a
//! missing or unreadable one stops the service with a message naming its
//! variable, instead of failing every connection attempt later.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Makes *ring* the process-wide rustls provider, for the libraries that
/// build their TLS configuration with the default one (the Redis client).
/// Called once at start-up ([`Application::build`](crate::startup::Application::build));
/// calling it again, or after the embedding program installed a provider
/// of its own, changes nothing.
pub(crate) fn install_crypto_provider() {
    // An error only says that a provider is installed already: it stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM text of a certificate file, checked to hold at least one
/// certificate. The error says why, with the path (never the contents).
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<u8>, String> {
    let pem = read(path)?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate
            .map_err(|err| format!("{} is not a PEM certificate file: {err}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// The PEM text of a private key file (PKCS#8, PKCS#1 or SEC1, not
/// encrypted), checked to hold a key.
pub(crate) fn read_private_key(path: &Path) -> Result<Vec<u8>, String> {
    let pem = read(path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => Ok(pem),
        Err(pem::Error::NoItemsFound) => Err(format!(
            "{} holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )),
        Err(err) => Err(format!(
            "{} is not a PEM private key file: {err}",
            path.display()
        )),
    }
}

/// Checks that a file or directory that another library reads later
/// exists and can be read.
pub(crate) fn check_readable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return std::fs::read_dir(path)
            .map(drop)
            .map_err(|err| format!("cannot read {}: {err}", path.display()));
    }
    read(path).map(drop)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn certificate_and_key_files_are_checked_and_returned_as_pem() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["db.internal".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = write(&dir, "cert.pem", &certificate.pem());
        let key_path = write(&dir, "key.pem", &key.serialize_pem());
        assert_eq!(
            read_certificates(&cert_path).unwrap(),
            certificate.pem().as_bytes()
        );
        assert!(read_private_key(&key_path).is_ok());
        assert!(check_readable(&cert_path).is_ok());
        assert!(check_readable(dir.path()).is_ok(), "a CA directory");

        // A key is not a certificate, and the reverse.
        let err = read_certificates(&key_path).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = read_private_key(&cert_path).unwrap_err();
        assert!(
            err.contains("holds no unencrypted PEM private key"),
            "{err}"
        );

        let missing = dir.path().join("missing.pem");
        for err in [
            read_certificates(&missing).unwrap_err(),
            read_private_key(&missing).unwrap_err(),
            check_readable(&missing).unwrap_err(),
        ] {
            assert!(
                err.starts_with(&format!("cannot read {}", missing.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn installing_the_provider_twice_keeps_ring() {
        install_crypto_provider();
        install_crypto_provider();
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            provider.cipher_suites.len(),
            ring.cipher_suites.len(),
            "the ring provider"
        );
    }
}
