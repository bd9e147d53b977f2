//! `--tls`: a certificate for the server under test, made in a throwaway directory with
//! the `openssl` command (a root authority and a `localhost`/127.0.0.1 ECDSA P-256
//! server certificate, what certbot issues by default), and the clients' trust in it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The clients' TLS: the root they trust (its file, for the client processes) and the
/// configuration built from it.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The root certificate's PEM file.
    pub root: PathBuf,
    /// What every client connection starts from (ALPN `http/1.1`, as browsers offer).
    pub config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Clients that trust the root certificate in `root`.
    pub fn trusting(root: &Path) -> Result<ClientTls, String> {
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(root).map_err(|e| format!("{}: {e}", root.display()))?
        {
            let cert = cert.map_err(|e| format!("{}: {e}", root.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", root.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            root: root.to_path_buf(),
            config: Arc::new(config),
        })
    }
}

/// The server's certificate and key and the root that issued them, in a directory
/// removed when this is dropped.
pub struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    /// Makes them with `openssl`.
    pub fn make() -> Result<TestCertificates, String> {
        let dir = std::env::temp_dir().join(format!("wsbench-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let certs = TestCertificates { dir };
        std::fs::write(
            certs.dir.join("server.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        for args in [
            format!("req -x509 {ec} -keyout root.key -out root.pem -days 2 -subj /CN=wsbench-root"),
            format!("req {ec} -keyout server.key -out server.csr -subj /CN=localhost"),
            "x509 -req -in server.csr -CA root.pem -CAkey root.key -CAcreateserial \
             -out server.pem -days 2 -extfile server.cnf"
                .to_string(),
        ] {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(&certs.dir)
                .output()
                .map_err(|e| format!("running openssl (Debian's openssl package): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "openssl {args}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(certs)
    }

    /// The root the clients trust.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    /// The server's environment for TLS.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "WS_ASSETS_TLS_CERT_FILE",
                self.dir.join("server.pem").display().to_string(),
            ),
            (
                "WS_ASSETS_TLS_KEY_FILE",
                self.dir.join("server.key").display().to_string(),
            ),
        ]
    }
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `--tls`'s TLS run: the server's certificate and the clients that trust it.
pub struct ServerTls {
    certificates: TestCertificates,
    /// What the clients trust.
    pub clients: ClientTls,
}

impl ServerTls {
    /// Makes a certificate and the clients' trust in it.
    pub fn make() -> Result<ServerTls, String> {
        let certificates = TestCertificates::make()?;
        let clients = ClientTls::trusting(&certificates.root())?;
        Ok(ServerTls {
            certificates,
            clients,
        })
    }

    /// The server's environment for TLS.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        self.certificates.server_env()
    }
}
