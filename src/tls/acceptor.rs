//! The TLS configuration every new connection starts from, and its renewal.
//!
//! One rustls `ServerConfig` serves every connection: TLS 1.3 and 1.2 with the `ring`
//! provider's cipher suites, ALPN `http/1.1` (the only protocol spoken here), and
//! session resumption: stateless tickets (TLS 1.3 and 1.2) plus a bounded cache of
//! session ids for TLS 1.2 clients without ticket support. A reload builds a new
//! `ServerConfig` from the files; connections already open keep the one they started
//! with. The ticket keys and the session cache are carried over, so a reload does not
//! cost every client a full handshake.

use std::fmt;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};

use super::TlsFiles;
use super::identity::{Identity, TlsError};
use super::stream::{Tcp, TlsStream};

/// Sessions remembered for TLS 1.2 clients that resume by session id: each is a few
/// hundred bytes, and clients that support tickets (all current browsers) need none.
const SESSION_CACHE_ENTRIES: usize = 1024;

/// The protocol offered in ALPN: HTTP/1.1, which carries the page, `/health`,
/// `/metrics` and the WebSocket upgrade.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why TLS could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// A file is missing, unreadable or wrong (a configuration error).
    Files(TlsError),
    /// rustls could not be set up (no randomness for the ticket keys).
    Crypto(rustls::Error),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Files(e) => write!(f, "{e}"),
            SetupError::Crypto(e) => write!(f, "cannot set up TLS: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// The current certificate and key, and the configuration new connections get.
pub struct Acceptor {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    config: Arc<ServerConfig>,
    identity: Identity,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("files", &self.files)
            .field("identity", &self.describe())
            .finish()
    }
}

impl Acceptor {
    /// Reads the certificate chain and key from `files` and builds the configuration.
    pub fn load(files: TlsFiles) -> Result<Acceptor, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = Identity::load(&files, &provider).map_err(SetupError::Files)?;
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(SetupError::Crypto)?;
        let sessions: Arc<dyn StoresServerSessions> =
            ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        let config = server_config(&provider, &identity, &ticketer, &sessions)
            .map_err(SetupError::Crypto)?;
        Ok(Acceptor {
            files,
            provider,
            ticketer,
            sessions,
            config,
            identity,
        })
    }

    /// Reads both files again; on success new connections get the new pair (open ones
    /// keep theirs). On failure nothing changes and the error says why.
    pub fn reload(&mut self) -> Result<(), SetupError> {
        let identity = Identity::load(&self.files, &self.provider).map_err(SetupError::Files)?;
        let config = server_config(&self.provider, &identity, &self.ticketer, &self.sessions)
            .map_err(SetupError::Crypto)?;
        self.config = config;
        self.identity = identity;
        Ok(())
    }

    /// A TLS server connection over a freshly accepted socket.
    pub fn accept<S: Tcp>(&self, socket: S) -> Result<TlsStream<S>, rustls::Error> {
        TlsStream::new(socket, Arc::clone(&self.config))
    }

    /// What is served, for the log: the files and what they hold.
    pub fn describe(&self) -> String {
        format!(
            "{} from {} and {}",
            self.identity.describe(),
            self.files.chain.display(),
            self.files.key.display()
        )
    }

    /// The configuration new connections start from.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// Always the one identity: the service has one certificate, whatever name the client
/// asks for (SNI).
#[derive(Debug)]
struct OneIdentity(Arc<CertifiedKey>);

impl ResolvesServerCert for OneIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    identity: &Identity,
    ticketer: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&TLS13, &TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneIdentity(Arc::clone(&identity.certified))));
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    config.ticketer = Arc::clone(ticketer);
    config.session_storage = Arc::clone(sessions);
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, StreamOwned};

    use super::*;
    use crate::tls::identity::Problem;
    use crate::tls::testca::{KeyKind, TestCa};

    fn refusal(files: TlsFiles) -> TlsError {
        match Acceptor::load(files) {
            Err(SetupError::Files(e)) => e,
            Err(e) => panic!("not a file problem: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn every_key_kind_loads() {
        let ca = TestCa::new();
        for (name, key, kind) in [
            ("ec", KeyKind::Ecdsa, "ECDSA"),
            ("rsa", KeyKind::Rsa, "RSA"),
            ("ed", KeyKind::Ed25519, "Ed25519"),
        ] {
            let acceptor = Acceptor::load(ca.issue(name, key).into()).unwrap();
            let text = acceptor.describe();
            assert!(
                text.starts_with(&format!("2 certificates, {kind} key from ")),
                "{text}"
            );
        }
    }

    #[test]
    fn refusals_name_the_variable_the_file_and_the_problem() {
        let ca = TestCa::new();
        let a = ca.issue("a", KeyKind::Ecdsa);
        let b = ca.issue("b", KeyKind::Ecdsa);

        let e = refusal(TlsFiles {
            chain: a.chain.clone(),
            key: b.key.clone(),
        });
        assert!(matches!(e.problem, Problem::KeyMismatch { .. }));
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("WS_ASSETS_TLS_KEY_FILE={}: ", b.key.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("WS_ASSETS_TLS_CERT_FILE={}", a.chain.display())),
            "{text}"
        );

        let e = refusal(TlsFiles {
            chain: a.key.clone(),
            key: a.chain.clone(),
        });
        assert!(
            matches!(e.problem, Problem::NoCertificate { holds_key: true }),
            "{e}"
        );
        assert!(e.to_string().contains("swapped"), "{e}");

        let e = refusal(TlsFiles {
            chain: ca.path("missing.pem"),
            key: a.key.clone(),
        });
        let text = e.to_string();
        assert!(text.starts_with("WS_ASSETS_TLS_CERT_FILE="), "{text}");
        assert!(
            text.contains("missing.pem: cannot read the file: "),
            "{text}"
        );

        // Nothing of the key file shows in any message about it.
        let key_text = std::fs::read_to_string(&a.key).unwrap();
        let body: String = key_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        ca.write("cut.key", &key_text[..key_text.len() / 2]);
        let e = refusal(TlsFiles {
            chain: a.chain.clone(),
            key: ca.path("cut.key"),
        });
        let text = e.to_string();
        assert!(text.contains("not a valid PEM file"), "{text}");
        for chunk in body.as_bytes().chunks(8) {
            assert!(
                !text.contains(std::str::from_utf8(chunk).unwrap()),
                "{text}"
            );
        }
    }

    /// The certificate a new connection is served, over a real socket.
    fn served(acceptor: &Acceptor, ca: &TestCa) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client_config = ca.client_config();
        let client = std::thread::spawn(move || {
            let name = ServerName::try_from("localhost").unwrap();
            let conn = ClientConnection::new(client_config, name).unwrap();
            let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
            tls.write_all(b"hello").unwrap();
            tls.flush().unwrap();
            tls.conn.peer_certificates().unwrap()[0].to_vec()
        });
        let (socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut server = acceptor
            .accept(mio::net::TcpStream::from_std(socket))
            .unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 5 && std::time::Instant::now() < deadline {
            let mut buf = [0u8; 16];
            match server.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"hello");
        client.join().unwrap()
    }

    #[test]
    fn a_reload_serves_new_connections_the_new_pair_and_a_failed_one_keeps_the_old() {
        let ca = TestCa::new();
        let old = ca.issue("old", KeyKind::Ecdsa);
        let live = TlsFiles {
            chain: ca.path("live.pem"),
            key: ca.path("live.key"),
        };
        std::fs::copy(&old.chain, &live.chain).unwrap();
        std::fs::copy(&old.key, &live.key).unwrap();
        let mut acceptor = Acceptor::load(live.clone()).unwrap();
        assert_eq!(served(&acceptor, &ca), old.certificate());

        let new = ca.issue("new", KeyKind::Ecdsa);
        std::fs::copy(&new.chain, &live.chain).unwrap();
        std::fs::copy(&new.key, &live.key).unwrap();
        acceptor.reload().unwrap();
        assert_eq!(served(&acceptor, &ca), new.certificate());

        // A renewal gone wrong: the new certificate without its key.
        std::fs::copy(&old.chain, &live.chain).unwrap();
        let e = acceptor.reload().unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        assert_eq!(served(&acceptor, &ca), new.certificate());
    }
}
