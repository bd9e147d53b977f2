//! TLS for PostgreSQL: one rustls connector, built from the DSN's `sslmode` and
//! `sslrootcert` by libpq's rules (see [`PgSettings::verify`]), for start-up, `migrate`
//! and the pool alike.
//!
//! It uses the ring crypto provider, which the feed's HTTPS client already carries.
//!
//! [`PgSettings::verify`]: super::dsn::PgSettings::verify

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::dsn::{RootCerts, Verify};

/// The connector every PostgreSQL connection of the service is opened with.
pub type Connector = MakeRustlsConnect;

/// Why the TLS settings of a DSN cannot be used. Start-up stops with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The `sslrootcert` file could not be read.
    ReadRoots {
        /// The file named by `sslrootcert`.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The `sslrootcert` file holds no certificate, or one that cannot be a root.
    BadRoots {
        /// The file named by `sslrootcert`.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// No trusted root could be loaded from the system.
    NoSystemRoots(String),
    /// rustls refused the settings (not expected with its own defaults).
    Setup(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::ReadRoots { path, why } => {
                write!(f, "cannot read sslrootcert {}: {why}", path.display())
            }
            TlsError::BadRoots { path, why } => write!(
                f,
                "sslrootcert {} is not usable: {why}; it must hold PEM certificates",
                path.display()
            ),
            TlsError::NoSystemRoots(why) => write!(
                f,
                "no trusted root certificates found on this system ({why}); install them \
                 (Debian: ca-certificates) or name a file with sslrootcert=PATH"
            ),
            TlsError::Setup(why) => write!(f, "cannot set up TLS: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Builds the connector for `verify`, loading the roots it names.
pub fn connector(verify: &Verify) -> Result<Connector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(NoNameCheck {
            roots: None,
            algorithms,
        }),
        Verify::Chain(roots) => Arc::new(NoNameCheck {
            roots: Some(load_roots(roots)?),
            algorithms,
        }),
        Verify::ChainAndHost(roots) => WebPkiServerVerifier::builder_with_provider(
            Arc::new(load_roots(roots)?),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The roots `roots` names; never empty.
fn load_roots(roots: &RootCerts) -> Result<RootCertStore, TlsError> {
    match roots {
        RootCerts::File(path) => load_file(path),
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let why = found.errors.first().map_or_else(
                    || "the system's certificate store is empty".to_string(),
                    ToString::to_string,
                );
                return Err(TlsError::NoSystemRoots(why));
            }
            Ok(store)
        }
    }
}

fn load_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let read_error = |why: String| TlsError::ReadRoots {
        path: path.to_path_buf(),
        why,
    };
    let bad = |why: String| TlsError::BadRoots {
        path: path.to_path_buf(),
        why,
    };
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| read_error(pem_error_text(e)))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(pem_error_text(e)))?;
        store.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(bad("it holds no certificate".to_string()));
    }
    Ok(store)
}

/// The I/O error itself for `Io` (its text says what the OS said), else the PEM error.
fn pem_error_text(error: rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Checks the server's certificate chain against `roots` (with none: nothing), and never
/// its name: `prefer` and `require` (a chain check only with an `sslrootcert` file) and
/// `verify-ca`. The handshake's own signatures are always verified, so the session is
/// bound to the certificate presented.
#[derive(Debug)]
struct NoNameCheck {
    roots: Option<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoNameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_root_file_names_the_file_and_the_reason() {
        let path = PathBuf::from("/nonexistent/ws_assets-root.pem");
        let err = connector(&Verify::Chain(RootCerts::File(path.clone()))).err();
        let Some(TlsError::ReadRoots { path: named, why }) = err else {
            panic!("expected ReadRoots, got {err:?}");
        };
        assert_eq!(named, path);
        assert!(why.contains("No such file"), "{why}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("ws_assets-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = connector(&Verify::ChainAndHost(RootCerts::File(path.clone()))).err();
        let _ = std::fs::remove_dir_all(&dir);
        let Some(TlsError::BadRoots { path: named, why }) = err else {
            panic!("expected BadRoots, got {err:?}");
        };
        assert_eq!(named, path);
        assert!(why.contains("no certificate"), "{why}");
        let text = TlsError::BadRoots { path: named, why }.to_string();
        assert!(text.contains("empty.pem") && text.contains("PEM"), "{text}");
    }

    #[test]
    fn no_check_needs_no_roots() {
        assert!(connector(&Verify::Nothing).is_ok());
        let verifier = NoNameCheck {
            roots: None,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        assert!(!verifier.supported_verify_schemes().is_empty());
    }
}
