//! The server's identity: its certificate chain and private key, read from the two PEM
//! files, checked to belong together, ready for rustls to sign handshakes with.
//!
//! Every refusal is a [`TlsError`] that names the variable, the file and what is wrong
//! with it in words an operator can act on. No message ever holds a byte of the key:
//! the PEM parser's own errors (which may quote a line) are replaced by fixed texts.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, SignatureAlgorithm};

use super::{CHAIN_VARIABLE, KEY_VARIABLE, TlsFiles};

/// Largest PEM file read: a chain of a few certificates or one key is a few KiB.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Which of the two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// The certificate chain (`WS_ASSETS_TLS_CERT_FILE`).
    Chain,
    /// The private key (`WS_ASSETS_TLS_KEY_FILE`).
    Key,
}

impl File {
    /// The variable that names this file.
    pub fn variable(self) -> &'static str {
        match self {
            File::Chain => CHAIN_VARIABLE,
            File::Key => KEY_VARIABLE,
        }
    }
}

/// What is wrong with a file.
#[derive(Debug)]
pub enum Problem {
    /// It could not be read (missing, unreadable, a directory...).
    Unreadable(io::Error),
    /// It is larger than any certificate chain or key.
    TooLarge,
    /// It is not valid PEM; the text says what (never quoting the file).
    NotPem(&'static str),
    /// The chain file holds no certificate; `holds_key` when it holds a private key.
    NoCertificate {
        /// A private key was found instead: the files may be swapped.
        holds_key: bool,
    },
    /// The key file holds no private key rustls can read.
    NoKey {
        /// A certificate was found instead: the files may be swapped.
        holds_certificate: bool,
        /// An encrypted key was found: rustls needs it unencrypted.
        encrypted: bool,
    },
    /// The key file holds more than one private key.
    SeveralKeys,
    /// The key is of a kind or size rustls cannot sign with.
    UnsupportedKey(String),
    /// The server's certificate (the chain's first) cannot be parsed.
    BadCertificate(String),
    /// The key is not the one the server's certificate was issued for.
    KeyMismatch {
        /// The chain file, named in the message.
        chain: PathBuf,
    },
}

/// Why the certificate and key could not be used: the variable, the file, the problem.
#[derive(Debug)]
pub struct TlsError {
    /// The file at fault.
    pub file: File,
    /// Its path, as configured.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}: ", self.file.variable(), self.path.display())?;
        match &self.problem {
            Problem::Unreadable(e) => write!(f, "cannot read the file: {e}"),
            Problem::TooLarge => write!(
                f,
                "the file is larger than {} KiB, too large for a certificate chain or a key",
                MAX_FILE_BYTES / 1024
            ),
            Problem::NotPem(why) => write!(f, "not a valid PEM file ({why})"),
            Problem::NoCertificate { holds_key } => {
                write!(
                    f,
                    "no certificate in the file (expected PEM \"BEGIN CERTIFICATE\" blocks, the server's certificate first)"
                )?;
                if *holds_key {
                    write!(f, "; it holds a private key: are the two files swapped?")?;
                }
                Ok(())
            }
            Problem::NoKey {
                holds_certificate,
                encrypted,
            } => {
                if *encrypted {
                    return write!(
                        f,
                        "the private key is encrypted; give it unencrypted (`openssl pkey -in KEY -out KEY.plain`) in a file only the service can read"
                    );
                }
                write!(
                    f,
                    "no private key in the file (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)"
                )?;
                if *holds_certificate {
                    write!(f, "; it holds a certificate: are the two files swapped?")?;
                }
                Ok(())
            }
            Problem::SeveralKeys => write!(
                f,
                "more than one private key in the file; keep only the certificate's"
            ),
            Problem::UnsupportedKey(why) => write!(
                f,
                "the private key cannot be used ({why}); supported are RSA (2048 bits or more), ECDSA P-256 or P-384, and Ed25519"
            ),
            Problem::BadCertificate(why) => {
                write!(f, "the first certificate cannot be parsed ({why})")
            }
            Problem::KeyMismatch { chain } => write!(
                f,
                "this private key does not belong to the certificate in {CHAIN_VARIABLE}={} (the chain's first certificate must be the server's own)",
                chain.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// A certificate chain and the key that signs for it, as rustls uses them.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The chain and the signing key.
    pub certified: Arc<CertifiedKey>,
}

impl Identity {
    /// Reads and checks both files: a chain of at least one certificate, exactly one
    /// private key of a kind `provider` can sign with, and that key the certificate's.
    pub fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<Identity, TlsError> {
        let chain_error = |problem| TlsError {
            file: File::Chain,
            path: files.chain.clone(),
            problem,
        };
        let key_error = |problem| TlsError {
            file: File::Key,
            path: files.key.clone(),
            problem,
        };
        let chain = read_chain(&read(&files.chain).map_err(chain_error)?).map_err(chain_error)?;
        let mut key_pem = read(&files.key).map_err(key_error)?;
        let key = read_key(&key_pem);
        // The key's text is not needed any more; do not leave it in freed memory.
        key_pem.fill(0);
        let key = key.map_err(key_error)?;
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(Problem::UnsupportedKey(e.to_string())))?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(key_error(Problem::KeyMismatch {
                    chain: files.chain.clone(),
                }));
            }
            Err(e) => return Err(chain_error(Problem::BadCertificate(e.to_string()))),
        }
        Ok(Identity {
            certified: Arc::new(certified),
        })
    }

    /// A short description for the log: how many certificates and the key's kind.
    pub fn describe(&self) -> String {
        let kind = match self.certified.key.algorithm() {
            SignatureAlgorithm::RSA => "RSA",
            SignatureAlgorithm::ECDSA => "ECDSA",
            SignatureAlgorithm::ED25519 => "Ed25519",
            _ => "other",
        };
        let count = self.certified.cert.len();
        let plural = if count == 1 { "" } else { "s" };
        format!("{count} certificate{plural}, {kind} key")
    }
}

/// The file's bytes, refusing anything too large to be a chain or a key.
fn read(path: &Path) -> Result<Vec<u8>, Problem> {
    let len = std::fs::metadata(path).map_err(Problem::Unreadable)?.len();
    if len > MAX_FILE_BYTES {
        return Err(Problem::TooLarge);
    }
    std::fs::read(path).map_err(Problem::Unreadable)
}

/// Every section of a PEM file, in order (sections of kinds rustls does not know, such
/// as an encrypted key, are skipped by the parser).
fn sections(pem: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, Problem> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Problem::NotPem(match e {
                pem::Error::MissingSectionEnd { .. } => "a block has no END line",
                pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
                pem::Error::Base64Decode(_) => "a block is not valid base64",
                pem::Error::SectionTooLarge => "a block is too large",
                _ => "unreadable",
            })
        })
}

fn is_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
    )
}

fn read_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let sections = sections(pem)?;
    let chain: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if chain.is_empty() {
        return Err(Problem::NoCertificate {
            holds_key: sections.iter().any(|(kind, _)| is_key(*kind)),
        });
    }
    Ok(chain)
}

fn read_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Problem> {
    let sections = sections(pem)?;
    let mut keys = sections
        .into_iter()
        .filter_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der));
    let Some(key) = keys.next() else {
        let holds_certificate = CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok());
        let encrypted = pem
            .windows(b"ENCRYPTED PRIVATE KEY".len())
            .any(|w| w == b"ENCRYPTED PRIVATE KEY");
        return Err(Problem::NoKey {
            holds_certificate,
            encrypted,
        });
    };
    if keys.next().is_some() {
        return Err(Problem::SeveralKeys);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    // PEM blocks whose content does not matter to the parser.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn problem(result: Result<impl fmt::Debug, Problem>) -> Problem {
        result.unwrap_err()
    }

    #[test]
    fn a_chain_file_without_certificates_says_what_it_holds() {
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            problem(read_chain(key.as_bytes())),
            Problem::NoCertificate { holds_key: true }
        ));
        assert!(matches!(
            problem(read_chain(b"hello")),
            Problem::NoCertificate { holds_key: false }
        ));
    }

    #[test]
    fn a_key_file_without_a_key_says_what_it_holds() {
        assert!(matches!(
            problem(read_key(CERT.as_bytes())),
            Problem::NoKey {
                holds_certificate: true,
                encrypted: false
            }
        ));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            problem(read_key(encrypted.as_bytes())),
            Problem::NoKey {
                encrypted: true,
                ..
            }
        ));
        let two = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\
                   -----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            problem(read_key(two.as_bytes())),
            Problem::SeveralKeys
        ));
    }

    #[test]
    fn broken_pem_is_described_without_quoting_it() {
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0c2VjcmV0\n";
        let e = TlsError {
            file: File::Key,
            path: "/k.pem".into(),
            problem: problem(read_key(secret.as_bytes())),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("WS_ASSETS_TLS_KEY_FILE=/k.pem: not a valid PEM file"),
            "{text}"
        );
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }
}
