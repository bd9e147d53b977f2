//! A load client's connection: the socket itself, or TLS over it (`--tls`), driven
//! without blocking by the same event loop. Everything above it (the upgrade, frames,
//! the stream checks) sees the same bytes either way.
//!
//! TLS is rustls's buffered client: what the client writes is taken whole and sent as
//! the socket takes it (the tool's side of the memory is not what is measured); what
//! arrives is decrypted as it is read.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// The name the tool's test certificate is issued for.
pub const SERVER_NAME: &str = "localhost";

/// A client's connection.
pub enum Wire {
    /// The socket as connected.
    Plain(TcpStream),
    /// TLS over the socket.
    Tls(Box<TlsWire>),
}

/// The socket and its rustls client connection.
pub struct TlsWire {
    sock: TcpStream,
    conn: ClientConnection,
}

impl Wire {
    /// TLS over `sock` with `config`, its handshake to start as soon as the socket is
    /// connected (the first flush sends the ClientHello).
    pub fn tls(sock: TcpStream, config: &Arc<ClientConfig>) -> io::Result<Wire> {
        let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
        let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        // What the client writes is always taken (the tool is not what is measured).
        conn.set_buffer_limit(None);
        Ok(Wire::Tls(Box::new(TlsWire { sock, conn })))
    }

    /// The TCP socket (connect errors, addresses, registration).
    pub fn socket(&self) -> &TcpStream {
        match self {
            Wire::Plain(sock) => sock,
            Wire::Tls(tls) => &tls.sock,
        }
    }

    /// Whether a read shorter than asked means the socket is dry (with TLS it may only
    /// mean that a record ended).
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Wire::Plain(_))
    }

    /// Whether TLS records wait for the socket to take them.
    pub fn holds_output(&self) -> bool {
        match self {
            Wire::Plain(_) => false,
            Wire::Tls(tls) => tls.conn.wants_write(),
        }
    }

    /// Reads what arrived (decrypted with TLS): `Ok(0)` at the end of the connection,
    /// `WouldBlock` when nothing is there.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(sock) => sock.read(buf),
            Wire::Tls(tls) => tls.read(buf),
        }
    }

    /// Writes `bytes`: the socket takes what it can; TLS takes them all and sends its
    /// records as the socket takes them (the rest on [`Wire::flush`]).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(sock) => sock.write(bytes),
            Wire::Tls(tls) => {
                tls.conn.writer().write_all(bytes)?;
                tls.send()?;
                Ok(bytes.len())
            }
        }
    }

    /// Sends held TLS records as far as the socket takes them (nothing to do in plain).
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(_) => Ok(()),
            Wire::Tls(tls) => tls.send(),
        }
    }
}

impl TlsWire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server closed without close_notify: the end, as with TCP.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    self.conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    // Handshake replies, and what waited for the handshake to end.
                    self.send()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
