//! Native TLS on the service's one port: `https://` and `wss://` served by rustls inside
//! the same single-threaded reactor, with no thread per connection and no async runtime.
//!
//! - [`identity`]: the certificate chain and private key read from their PEM files, with
//!   errors that name the variable, the file and the problem (never the key);
//! - [`acceptor`]: the rustls server configuration every new connection starts from
//!   (TLS 1.2 and 1.3, ALPN `http/1.1`, session resumption), replaced on SIGHUP;
//! - [`stream`]: one connection's TLS over its non-blocking socket, through rustls's
//!   unbuffered API so that an idle connection holds no buffers at all.

pub mod acceptor;
pub mod identity;
pub mod stream;
// The black-box tests' throwaway certificate authority, which the unit tests share.
#[cfg(test)]
#[path = "../../tests/it/testca/mod.rs"]
mod testca;

use std::path::PathBuf;

pub use acceptor::Acceptor;
pub use identity::TlsError;
pub use stream::TlsStream;

/// The variable naming the certificate chain file.
pub const CHAIN_VARIABLE: &str = "WS_ASSETS_TLS_CERT_FILE";
/// The variable naming the private key file.
pub const KEY_VARIABLE: &str = "WS_ASSETS_TLS_KEY_FILE";

/// Where the certificate chain and its private key are read from, at start-up and on
/// every SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the chain: the server's certificate first, then its intermediates.
    pub chain: PathBuf,
    /// PEM file of the server certificate's private key.
    pub key: PathBuf,
}

#[cfg(test)]
impl From<testca::Issued> for TlsFiles {
    fn from(issued: testca::Issued) -> TlsFiles {
        TlsFiles {
            chain: issued.chain,
            key: issued.key,
        }
    }
}
