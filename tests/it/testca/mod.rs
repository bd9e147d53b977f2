//! A throwaway public-key infrastructure for the TLS tests, made by the test with the
//! `openssl` command: a root authority, an intermediate one, and server certificates
//! for `localhost` and 127.0.0.1 issued by the intermediate (so the chain file holds
//! two certificates, as a real one does), plus a rustls client that trusts the root.
//! Everything lives in a directory of its own, removed when the authority is dropped.
//! The service's own TLS unit tests use it too (`src/tls/mod.rs` includes this file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

/// The kind of a server key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256 (what browsers and certbot use by default).
    Ecdsa,
    /// RSA, 2048 bits.
    Rsa,
    /// Ed25519 (not accepted by browsers, but by rustls and OpenSSL clients).
    Ed25519,
}

impl KeyKind {
    fn openssl_args(self) -> &'static str {
        match self {
            KeyKind::Ecdsa => "-newkey ec -pkeyopt ec_paramgen_curve:P-256",
            KeyKind::Rsa => "-newkey rsa:2048",
            KeyKind::Ed25519 => "-newkey ed25519",
        }
    }
}

/// A server certificate's two files, as the service reads them.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The chain: the server's certificate, then the intermediate's.
    pub chain: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl Issued {
    /// The server's certificate (the chain's first), DER-encoded.
    pub fn certificate(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(&self.chain)
            .expect("a certificate in the chain file")
            .to_vec()
    }
}

/// A root and an intermediate authority in a directory of their own.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Makes the two authorities.
    pub fn new() -> TestCa {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ws_assets-test-ca-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test CA's directory");
        let ca = TestCa { dir };
        ca.write(
            "ca.cnf",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        ca.write(
            "server.cnf",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        );
        ca.openssl(&format!(
            "req -x509 {} -nodes -keyout root.key -out root.pem -days 3 \
             -subj /O=ws_assets-tests/CN=ws_assets-test-root -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign",
            KeyKind::Ecdsa.openssl_args()
        ));
        ca.openssl(&format!(
            "req {} -nodes -keyout intermediate.key -out intermediate.csr \
             -subj /O=ws_assets-tests/CN=ws_assets-test-intermediate",
            KeyKind::Ecdsa.openssl_args()
        ));
        ca.openssl(
            "x509 -req -in intermediate.csr -CA root.pem -CAkey root.key -CAcreateserial \
             -out intermediate.pem -days 3 -extfile ca.cnf",
        );
        ca
    }

    /// A server certificate for `localhost` and 127.0.0.1 with a key of `kind`, issued
    /// by the intermediate; `name` tells several apart.
    pub fn issue(&self, name: &str, kind: KeyKind) -> Issued {
        self.openssl(&format!(
            "req {} -nodes -keyout {name}.key -out {name}.csr -subj /CN=localhost",
            kind.openssl_args()
        ));
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA intermediate.pem -CAkey intermediate.key \
             -CAcreateserial -out {name}.leaf.pem -days 3 -extfile server.cnf"
        ));
        let chain = [
            std::fs::read_to_string(self.path(&format!("{name}.leaf.pem"))).unwrap(),
            std::fs::read_to_string(self.path("intermediate.pem")).unwrap(),
        ]
        .concat();
        self.write(&format!("{name}.pem"), &chain);
        Issued {
            chain: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }

    /// The root certificate's PEM file, which clients are told to trust.
    pub fn root_pem(&self) -> PathBuf {
        self.path("root.pem")
    }

    /// A file in the authority's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file in the authority's directory.
    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).expect("write a test CA file");
    }

    /// A rustls client that trusts the root and offers ALPN `http/1.1`, as a browser
    /// does, with TLS 1.3 and 1.2.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_for(rustls::DEFAULT_VERSIONS)
    }

    /// Like [`TestCa::client_config`], offering only `versions`.
    pub fn client_config_for(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.root_pem()).expect("root.pem") {
            roots.add(cert.expect("the root certificate")).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn openssl(&self, args: &str) {
        run_openssl(&self.dir, args);
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `openssl` with `args` (split at spaces) in `dir`, failing the test on error.
fn run_openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian's openssl package; .ci/install-chromium installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
