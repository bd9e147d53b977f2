//! What a client connection runs over: the accepted TCP socket itself, or TLS over it
//! when the service has a certificate. The connection driver sees one byte stream
//! either way; the poller always sees the TCP socket.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::conn::Stream;
use crate::tls::TlsStream;

/// A connection's byte stream: plain (`http://`, `ws://`) or TLS (`https://`, `wss://`).
#[derive(Debug)]
pub enum Transport {
    /// The socket as accepted.
    Plain(TcpStream),
    /// TLS over the socket; boxed, so that a plain connection's entry stays small.
    Tls(Box<TlsStream>),
}

impl Transport {
    /// The TCP socket, for registering it with the poller.
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => tls.socket_mut(),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write_vectored(bufs),
            Transport::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

impl Stream for Transport {
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.shutdown(Shutdown::Write),
            Transport::Tls(tls) => tls.shutdown_write(),
        }
    }

    fn pending_bytes(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
            Transport::Tls(tls) => tls.pending_bytes(),
        }
    }
}
