//! The clients' side of TLS: `https://` requests and `wss://` WebSocket clients over
//! rustls, trusting the test's own authority (see `testca`).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::http::{HttpResponse, exchange};
use super::websocket::{Client, ClientStream, READ_TIMEOUT};

/// TLS over a TCP socket, from the client's side.
pub type TlsSocket = StreamOwned<ClientConnection, TcpStream>;

impl ClientStream for TlsSocket {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
}

/// Connects to `addr` and completes the TLS handshake for `localhost` with `config`.
pub fn try_tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<TlsSocket> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    let name = ServerName::try_from("localhost").expect("a server name");
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// [`try_tls_connect`], failing the test on error.
pub fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsSocket {
    try_tls_connect(addr, config).unwrap_or_else(|e| panic!("TLS connect to {addr}: {e}"))
}

/// One raw request over TLS and its whole answer (see `http_exchange`).
pub fn https_exchange(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    request: &[u8],
) -> HttpResponse {
    let mut tls = tls_connect(addr, config);
    exchange(&mut tls, request).unwrap_or_else(|e| panic!("HTTPS request to {addr}: {e}"))
}

/// `GET path` over TLS; returns (status, body).
pub fn https_get(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let response = https_exchange(addr, config, request.as_bytes());
    (response.status, response.text())
}

impl Client<TlsSocket> {
    /// Connects over TLS and completes the WebSocket handshake on `path` (`wss://`).
    pub fn connect_tls(addr: SocketAddr, path: &str, config: &Arc<ClientConfig>) -> Self {
        let tls = tls_connect(addr, config);
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (ws, _) = tungstenite::client(url.as_str(), tls).expect("WebSocket handshake");
        Client { ws }
    }
}
