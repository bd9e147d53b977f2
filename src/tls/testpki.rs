//! For the unit tests: a throwaway certificate authority and server certificates made
//! with the `openssl` command, and a rustls client that trusts them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

use super::TlsFiles;

/// `openssl req`'s arguments for an ECDSA P-256 key.
const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256";

/// A certificate authority in a directory of its own, removed when dropped.
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// A new authority (an ECDSA P-256 key and a self-signed certificate).
    pub fn new() -> TestPki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ws_assets-unit-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = TestPki { dir };
        pki.openssl(&format!(
            "req -x509 {EC} -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ws_assets-unit-test-CA"
        ));
        pki
    }

    /// A server certificate for `localhost` with an ECDSA P-256 key, signed by the
    /// authority, as the two files the service reads; `name` tells several apart.
    pub fn issue(&self, name: &str) -> TlsFiles {
        self.issue_with(name, EC)
    }

    /// Like [`TestPki::issue`] with the key `openssl req` makes from `key_args`
    /// (e.g. `-newkey rsa:2048`).
    pub fn issue_with(&self, name: &str, key_args: &str) -> TlsFiles {
        self.openssl(&format!(
            "req {key_args} -nodes -keyout {name}.key -out {name}.csr -subj /CN=localhost"
        ));
        std::fs::write(
            self.dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile ext.cnf"
        ));
        TlsFiles {
            chain: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// A file in the authority's directory, for tests that write their own.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A client that trusts the authority and offers ALPN `http/1.1`.
    pub fn client(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.dir.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
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
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestPki {
    /// Runs `openssl` with `args` (split at spaces) in the authority's directory.
    fn openssl(&self, args: &str) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&self.dir)
            .output()
            .expect("the openssl command (Debian's openssl package)");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
