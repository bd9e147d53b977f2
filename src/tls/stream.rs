//! One connection's TLS: rustls's unbuffered server connection driven over the
//! connection's non-blocking socket, as a plain `Read + Write` byte stream.
//!
//! The unbuffered API leaves every buffer to us, so an idle connection holds none:
//! received bytes wait only while a record is incomplete, decrypted bytes only until
//! they are read, and records only while the kernel will not take them. What comes and
//! goes in one call is staged in buffers shared by the whole thread. (rustls's buffered
//! `ServerConnection` keeps a 4 KiB receive buffer per connection for its lifetime, and
//! queues every outgoing record in a heap chunk of its own.)
//!
//! The rules a caller relies on:
//!
//! - `read` returns decrypted application bytes; `WouldBlock` only once the socket has
//!   been read dry (the handshake's own replies are written on the way); `Ok(0)` at the
//!   client's close_notify or EOF; an error carrying a [`TlsFailure`] for a failed
//!   handshake, a broken record or plain HTTP, and the same error ever after.
//! - `write` never blocks: it encrypts up to one record at a time and writes it out,
//!   taking more while the kernel does, and returns the plaintext bytes taken. The tail
//!   of a record the kernel did not take is held ([`TlsStream::pending_bytes`], at most
//!   one record) and nothing more is taken until `flush` has written it. Before the
//!   handshake is complete it takes nothing (`WouldBlock`).
//! - `flush` writes held records without blocking; [`TlsStream::shutdown_write`] sends
//!   close_notify and shuts the socket's write side once everything is out.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

/// Largest plaintext sealed into one record (TLS's own maximum).
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// Room for one record's header, tag and padding beyond its plaintext.
const RECORD_OVERHEAD: usize = 256;

/// Bytes asked of the socket per read: a whole record of the largest size.
const READ_CHUNK: usize = RECORD_PLAINTEXT + RECORD_OVERHEAD;

/// Most received bytes held while a record or handshake message is incomplete: the
/// largest handshake message rustls accepts (64 KiB) plus one record.
const MAX_INCOMING: usize = 64 * 1024 + RECORD_PLAINTEXT + RECORD_OVERHEAD;

/// What plain HTTP on the TLS port is answered with, before the connection is closed.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 50\r\n\
Connection: close\r\n\r\n\
This port speaks TLS only: use https:// or wss://\n";

/// Why a TLS connection cannot go on. Carried inside the `io::Error` that `read` and
/// `write` return (see [`TlsFailure::of`]), so the caller can count it without logging
/// each one.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsFailure {
    /// The client spoke plain HTTP to the TLS port; it was answered 400 in plain text.
    PlainHttp,
    /// The handshake failed: no protocol version, cipher suite or ALPN protocol in
    /// common, a malformed message, or an alert from a client that does not trust the
    /// certificate.
    Handshake(rustls::Error),
    /// A record after the handshake did not decrypt or was not expected.
    Session(rustls::Error),
    /// The client sent more than any handshake message or record can be.
    Oversized,
}

impl TlsFailure {
    /// The failure an error from a [`TlsStream`] carries, if it is one.
    pub fn of(error: &io::Error) -> Option<&TlsFailure> {
        error.get_ref()?.downcast_ref::<TlsFailure>()
    }

    fn to_io(&self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.clone())
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::PlainHttp => write!(f, "plain HTTP sent to the TLS port"),
            TlsFailure::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            TlsFailure::Session(e) => write!(f, "TLS session failed: {e}"),
            TlsFailure::Oversized => write!(f, "TLS input larger than any record"),
        }
    }
}

impl std::error::Error for TlsFailure {}

/// What one pass over rustls's states should do once the connection may send.
enum Job<'a> {
    /// Nothing: stop there.
    Nothing,
    /// Encrypt `plain` into `sealed` (resized to what the records need; the length
    /// written is stored in `sealed_len`).
    Seal {
        plain: &'a [u8],
        sealed: &'a mut Vec<u8>,
        sealed_len: &'a mut Option<usize>,
    },
    /// Append a close_notify alert to the held records.
    CloseNotify,
}

/// Buffers shared by every connection of the thread, for what passes through in one
/// call: the socket's latest bytes, plaintext gathered from several slices, sealed
/// records on their way to the socket.
#[derive(Default)]
struct Scratch {
    received: Vec<u8>,
    gathered: Vec<u8>,
    sealed: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A TLS server connection over a non-blocking byte stream (`mio`'s `TcpStream` in the
/// service; an in-memory stream in tests).
pub struct TlsStream<S = TcpStream> {
    socket: S,
    tls: UnbufferedServerConnection,
    /// Received bytes not yet processed: part of a record or handshake message.
    incoming: Vec<u8>,
    /// Records not yet taken by the kernel, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes not yet read, from `plain_read` on.
    plain: Vec<u8>,
    plain_read: usize,
    /// The handshake is complete: application data may be sent.
    open: bool,
    /// Nothing has been received yet (plain HTTP is recognised by the first byte).
    fresh: bool,
    /// The client sent close_notify or closed its side.
    peer_closed: bool,
    /// We sent close_notify; nothing more may be written.
    close_sent: bool,
    /// The socket's write side is to be shut once `outgoing` is empty.
    shut_wanted: bool,
    shut: bool,
    failed: Option<TlsFailure>,
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("open", &self.open)
            .field("incoming", &self.incoming.len())
            .field("pending", &(self.outgoing.len() - self.sent))
            .field("plain", &(self.plain.len() - self.plain_read))
            .field("peer_closed", &self.peer_closed)
            .field("close_sent", &self.close_sent)
            .field("failed", &self.failed)
            .finish()
    }
}

/// What TLS runs over: a non-blocking byte stream whose write side can be shut.
pub trait Tcp: Read + Write {
    /// Shuts the write side (sends a TCP FIN).
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Tcp for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl<S: Tcp> TlsStream<S> {
    /// A server connection over a freshly accepted `socket`, starting its handshake
    /// with `config`.
    pub fn new(socket: S, config: Arc<ServerConfig>) -> Result<TlsStream<S>, rustls::Error> {
        Ok(TlsStream {
            socket,
            tls: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            plain_read: 0,
            open: false,
            fresh: true,
            peer_closed: false,
            close_sent: false,
            shut_wanted: false,
            shut: false,
            failed: None,
        })
    }

    /// The socket, e.g. to register it with the event loop.
    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// The socket, e.g. to register it with the event loop.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// Whether the handshake is still in progress.
    pub fn is_handshaking(&self) -> bool {
        !self.open
    }

    /// Encrypted bytes accepted by `write` (or made by the handshake) that the kernel
    /// has not taken yet.
    pub fn pending_bytes(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Sends close_notify (once the handshake is complete) and shuts the socket's write
    /// side as soon as every held record is out; `flush` finishes what the kernel does
    /// not take now.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if self.open && !self.close_sent && self.failed.is_none() {
            self.process(Job::CloseNotify)?;
            self.close_sent = true;
        }
        self.shut_wanted = true;
        self.send_held()
    }

    /// Runs rustls's state machine over what has been received until it needs more
    /// input (or, with a job, until the job is done): decrypted data goes to `plain`,
    /// handshake records to `outgoing` and on to the socket.
    fn process(&mut self, mut job: Job<'_>) -> io::Result<()> {
        if let Some(failure) = &self.failed {
            return Err(failure.to_io());
        }
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.tls.process_tls_records(&mut self.incoming);
            let mut transmit = false;
            let mut again = true;
            match state {
                Err(e) => {
                    self.incoming.drain(..discard.min(self.incoming.len()));
                    return Err(self.fail_with(e));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = match record {
                            Ok(record) => record,
                            Err(e) => {
                                drop(traffic);
                                return Err(self.fail_with(e));
                            }
                        };
                        discard += record.discard;
                        if self.plain_read == self.plain.len() {
                            self.plain.clear();
                            self.plain_read = 0;
                        }
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let start = self.outgoing.len();
                    let needed = match encode.encode(&mut []) {
                        Err(EncodeError::InsufficientSize(size)) => size.required_size,
                        _ => 0,
                    };
                    self.outgoing.resize(start + needed, 0);
                    let written = encode.encode(&mut self.outgoing[start..]).unwrap_or(0);
                    self.outgoing.truncate(start + written);
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    transmit = true;
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    self.open = true;
                    match std::mem::replace(&mut job, Job::Nothing) {
                        Job::Nothing => again = false,
                        Job::Seal {
                            plain,
                            sealed,
                            sealed_len,
                        } => *sealed_len = Some(seal(&mut traffic, plain, sealed)?),
                        Job::CloseNotify => {
                            let start = self.outgoing.len();
                            self.outgoing.resize(start + RECORD_OVERHEAD, 0);
                            let written = traffic
                                .queue_close_notify(&mut self.outgoing[start..])
                                .unwrap_or(0);
                            self.outgoing.truncate(start + written);
                        }
                    }
                }
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    again = false;
                }
                // The handshake waits for the client; the job (if any) waits with it.
                Ok(ConnectionState::BlockedHandshake) => again = false,
                // Early data is never accepted (`max_early_data_size` is 0), and a state
                // rustls may add later is nothing this stream can act on.
                Ok(_) => {
                    self.incoming.drain(..discard.min(self.incoming.len()));
                    return Err(self.fail(TlsFailure::Handshake(rustls::Error::General(
                        "unexpected TLS connection state".into(),
                    ))));
                }
            }
            self.incoming.drain(..discard.min(self.incoming.len()));
            if transmit {
                self.send_held()?;
            }
            if !again {
                break;
            }
        }
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
        Ok(())
    }

    /// Records a rustls error as this connection's failure, after trying to send the
    /// alert rustls prepared for the client.
    fn fail_with(&mut self, error: rustls::Error) -> io::Error {
        let failure = if self.open {
            TlsFailure::Session(error)
        } else {
            TlsFailure::Handshake(error)
        };
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) =
            self.tls.process_tls_records(&mut []).state
        {
            let start = self.outgoing.len();
            self.outgoing.resize(start + RECORD_OVERHEAD, 0);
            let written = alert.encode(&mut self.outgoing[start..]).unwrap_or(0);
            self.outgoing.truncate(start + written);
            // Best effort: the connection is over either way.
            let _ = self.send_held();
        }
        self.fail(failure)
    }

    fn fail(&mut self, failure: TlsFailure) -> io::Error {
        let error = failure.to_io();
        self.failed = Some(failure);
        error
    }

    /// Writes held records until the kernel takes no more; shuts the write side once
    /// they are all out, if that was asked for.
    fn send_held(&mut self) -> io::Result<()> {
        while self.sent < self.outgoing.len() {
            match self.socket.write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        if self.shut_wanted && !self.shut {
            self.shut = true;
            self.socket.shutdown_write()?;
        }
        Ok(())
    }

    /// Reads what the socket has (one chunk) into `incoming`. `Ok(false)`: nothing now.
    fn receive(&mut self) -> io::Result<bool> {
        SCRATCH.with(|scratch| {
            let received = &mut scratch.borrow_mut().received;
            received.resize(READ_CHUNK, 0);
            let n = loop {
                match self.socket.read(received) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                self.peer_closed = true;
                return Ok(true);
            }
            if std::mem::take(&mut self.fresh) && received[0].is_ascii_uppercase() {
                // A TLS connection starts with a handshake record (22); an HTTP request
                // with its method. Say so in the only language the client speaks.
                let _ = self.socket.write(PLAIN_HTTP_ANSWER);
                return Err(self.fail(TlsFailure::PlainHttp));
            }
            if self.incoming.len() + n > MAX_INCOMING {
                return Err(self.fail(TlsFailure::Oversized));
            }
            self.incoming.extend_from_slice(&received[..n]);
            Ok(true)
        })
    }

    /// Encrypts the next record's worth of `bufs` (from plaintext offset `from`) and
    /// writes it; returns the plaintext taken and whether the kernel took all of it.
    fn seal_and_send(
        &mut self,
        scratch: &mut Scratch,
        bufs: &[IoSlice<'_>],
        from: usize,
    ) -> io::Result<(usize, bool)> {
        let Scratch {
            gathered, sealed, ..
        } = scratch;
        let plain = gather(bufs, from, RECORD_PLAINTEXT, gathered);
        let mut sealed_len = None;
        self.process(Job::Seal {
            plain,
            sealed,
            sealed_len: &mut sealed_len,
        })?;
        let Some(sealed_len) = sealed_len else {
            // Not writable after all (the connection is closing).
            return Ok((0, false));
        };
        let taken = plain.len();
        let mut written = 0;
        while written < sealed_len {
            match self.socket.write(&sealed[written..sealed_len]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if written < sealed_len {
            self.outgoing
                .extend_from_slice(&sealed[written..sealed_len]);
            return Ok((taken, false));
        }
        Ok((taken, true))
    }
}

/// Encrypts `plain` into `sealed`, growing it to what the records need.
fn seal(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    plain: &[u8],
    sealed: &mut Vec<u8>,
) -> io::Result<usize> {
    let want = plain.len() + RECORD_OVERHEAD;
    if sealed.len() < want {
        sealed.resize(want, 0);
    }
    loop {
        match traffic.encrypt(plain, sealed) {
            Ok(n) => return Ok(n),
            Err(EncryptError::InsufficientSize(size)) if size.required_size > sealed.len() => {
                sealed.resize(size.required_size, 0);
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

/// The next at most `max` bytes of the concatenation of `bufs` from `from` on: one
/// slice's own bytes when they lie in one, else copied into `gathered`.
fn gather<'a>(
    bufs: &'a [IoSlice<'a>],
    mut from: usize,
    max: usize,
    gathered: &'a mut Vec<u8>,
) -> &'a [u8] {
    let mut slices = bufs.iter().map(|b| &b[..]);
    let first = loop {
        match slices.next() {
            None => return &[],
            Some(slice) if from >= slice.len() => from -= slice.len(),
            Some(slice) => break slice,
        }
    };
    let first = &first[from..];
    if first.len() >= max {
        return &first[..max];
    }
    gathered.clear();
    gathered.extend_from_slice(first);
    for slice in slices {
        let room = max - gathered.len();
        if room == 0 {
            break;
        }
        gathered.extend_from_slice(&slice[..slice.len().min(room)]);
    }
    if gathered.len() == first.len() {
        // One slice after all: no need for the copy.
        return first;
    }
    gathered
}

impl<S: Tcp> Read for TlsStream<S> {
    /// Fills `buf` with decrypted bytes as far as the socket has records for it, like a
    /// socket's own read: `WouldBlock` only when there is nothing at all.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            if self.plain_read < self.plain.len() {
                let available = &self.plain[self.plain_read..];
                let n = available.len().min(buf.len() - filled);
                buf[filled..filled + n].copy_from_slice(&available[..n]);
                self.plain_read += n;
                filled += n;
                if self.plain_read == self.plain.len() {
                    self.plain = Vec::new();
                    self.plain_read = 0;
                }
                if filled == buf.len() {
                    return Ok(filled);
                }
            }
            if let Some(failure) = &self.failed {
                // What was read before the failure first; the failure next time.
                return if filled > 0 {
                    Ok(filled)
                } else {
                    Err(failure.to_io())
                };
            }
            if self.peer_closed {
                return Ok(filled);
            }
            let step = self.process(Job::Nothing).and_then(|()| {
                if self.plain_read < self.plain.len() || self.peer_closed {
                    Ok(true)
                } else {
                    self.receive()
                }
            });
            match step {
                Ok(true) => {}
                Ok(false) if filled > 0 => return Ok(filled),
                Ok(false) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(_) if filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Tcp> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Seals the slices into records of up to 16 KiB (several small frames share one
    /// record and one system call) and writes them while the kernel takes them.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(failure) = &self.failed {
            return Err(failure.to_io());
        }
        if self.close_sent {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if !self.open {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.send_held()?;
        if self.pending_bytes() > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        SCRATCH.with(|scratch| {
            let scratch = &mut scratch.borrow_mut();
            let mut taken = 0;
            while taken < total {
                let (n, all_sent) = self.seal_and_send(scratch, bufs, taken)?;
                taken += n;
                if !all_sent || n == 0 {
                    break;
                }
            }
            if taken == 0 && total > 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(taken)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_held()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use rustls::pki_types::ServerName;
    use rustls::version::{TLS12, TLS13};
    use rustls::{ClientConfig, ClientConnection, HandshakeKind};

    use super::*;
    use crate::tls::Acceptor;
    use crate::tls::testca::{KeyKind, TestCa};

    /// Both directions of an in-memory connection; the server's direction holds at most
    /// `window` bytes, like a kernel's socket buffer.
    #[derive(Default)]
    struct Wire {
        to_server: VecDeque<u8>,
        to_client: VecDeque<u8>,
        window: usize,
        client_closed: bool,
        server_shut: bool,
        server_writes: usize,
    }

    #[derive(Clone)]
    struct ServerEnd(Rc<RefCell<Wire>>);

    impl Read for ServerEnd {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut wire = self.0.borrow_mut();
            if wire.to_server.is_empty() {
                return if wire.client_closed {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(wire.to_server.len());
            for (slot, byte) in buf.iter_mut().zip(wire.to_server.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for ServerEnd {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut wire = self.0.borrow_mut();
            assert!(!wire.server_shut, "write after shutdown");
            let room = wire.window.saturating_sub(wire.to_client.len());
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(room);
            wire.to_client.extend(&buf[..n]);
            wire.server_writes += 1;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Tcp for ServerEnd {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.0.borrow_mut().server_shut = true;
            Ok(())
        }
    }

    /// A rustls client and a server stream joined by a [`Wire`].
    struct Pair {
        wire: Rc<RefCell<Wire>>,
        client: ClientConnection,
        server: TlsStream<ServerEnd>,
        /// Plaintext the client has received.
        received: Vec<u8>,
        client_saw_close: bool,
    }

    impl Pair {
        fn new(acceptor: &Acceptor, client: Arc<ClientConfig>) -> Pair {
            let wire = Rc::new(RefCell::new(Wire {
                window: 1 << 20,
                ..Wire::default()
            }));
            let name = ServerName::try_from("localhost").unwrap();
            Pair {
                server: acceptor.accept(ServerEnd(Rc::clone(&wire))).unwrap(),
                client: ClientConnection::new(client, name).unwrap(),
                wire,
                received: Vec::new(),
                client_saw_close: false,
            }
        }

        /// Moves the client's records to the server's side, and the server's to the
        /// client, which decrypts them.
        fn client_io(&mut self) {
            let mut out = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut out).unwrap();
            }
            self.wire.borrow_mut().to_server.extend(out);
            let bytes: Vec<u8> = self.wire.borrow_mut().to_client.drain(..).collect();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                self.client.read_tls(&mut rest).unwrap();
                let state = self.client.process_new_packets().unwrap();
                if state.peer_has_closed() {
                    self.client_saw_close = true;
                }
            }
            let mut plain = Vec::new();
            let _ = self.client.reader().read_to_end(&mut plain);
            self.received.extend(plain);
        }

        /// What the server reads now (WouldBlock is an empty read).
        fn server_read(&mut self) -> io::Result<Vec<u8>> {
            let mut got = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                match self.server.read(&mut buf) {
                    Ok(0) => return Ok(got),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                    Err(e) => return Err(e),
                }
            }
        }

        /// Runs the handshake to its end.
        fn handshake(&mut self) {
            for _ in 0..10 {
                self.client_io();
                self.server_read().unwrap();
                if !self.client.is_handshaking() && !self.server.is_handshaking() {
                    self.client_io();
                    return;
                }
            }
            panic!("no handshake: {:?}", self.server);
        }
    }

    /// A server stream whose client is the test itself, writing raw bytes to the wire.
    fn server_alone(acceptor: &Acceptor) -> (Rc<RefCell<Wire>>, TlsStream<ServerEnd>) {
        let wire = Rc::new(RefCell::new(Wire {
            window: 1 << 16,
            ..Wire::default()
        }));
        let server = acceptor.accept(ServerEnd(Rc::clone(&wire))).unwrap();
        (wire, server)
    }

    fn setup() -> (TestCa, Acceptor) {
        let ca = TestCa::new();
        let acceptor = Acceptor::load(ca.issue("server", KeyKind::Ecdsa).into()).unwrap();
        (ca, acceptor)
    }

    #[test]
    fn a_request_and_its_answer_cross_in_both_versions() {
        let (ca, acceptor) = setup();
        for version in [&TLS13, &TLS12] {
            let mut pair = Pair::new(&acceptor, ca.client_config_for(&[version]));
            assert_eq!(
                pair.server.write(b"too early").unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            pair.handshake();
            assert_eq!(pair.client.alpn_protocol(), Some(&b"http/1.1"[..]));
            pair.client
                .writer()
                .write_all(b"GET / HTTP/1.1\r\n\r\n")
                .unwrap();
            pair.client_io();
            assert_eq!(pair.server_read().unwrap(), b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(pair.server.write(b"HTTP/1.1 200 OK\r\n\r\n").unwrap(), 19);
            pair.client_io();
            assert_eq!(pair.received, b"HTTP/1.1 200 OK\r\n\r\n");
            assert_eq!(pair.server.pending_bytes(), 0);
        }
    }

    #[test]
    fn a_read_takes_as_many_records_as_the_buffer_holds() {
        let (ca, acceptor) = setup();
        let mut pair = Pair::new(&acceptor, ca.client_config_for(&[&TLS13]));
        pair.handshake();
        for part in [&b"one "[..], b"two ", b"three"] {
            pair.client.writer().write_all(part).unwrap();
            // One record each.
            pair.client_io();
        }
        let mut buf = [0u8; 64];
        assert_eq!(pair.server.read(&mut buf).unwrap(), 13);
        assert_eq!(&buf[..13], b"one two three");
        let mut small = [0u8; 5];
        pair.client.writer().write_all(b"abcdefgh").unwrap();
        pair.client_io();
        assert_eq!(pair.server.read(&mut small).unwrap(), 5);
        assert_eq!(pair.server.read(&mut small).unwrap(), 3);
        assert_eq!(
            pair.server.read(&mut small).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn an_idle_connection_holds_no_buffers() {
        let (ca, acceptor) = setup();
        let mut pair = Pair::new(&acceptor, ca.client_config_for(&[&TLS13]));
        pair.handshake();
        pair.client.writer().write_all(b"ping").unwrap();
        pair.client_io();
        assert_eq!(pair.server_read().unwrap(), b"ping");
        let s = &pair.server;
        assert_eq!(
            (
                s.incoming.capacity(),
                s.outgoing.capacity(),
                s.plain.capacity()
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn plain_http_is_answered_400_and_fails_quietly() {
        let (_ca, acceptor) = setup();
        let (wire, mut server) = server_alone(&acceptor);
        wire.borrow_mut()
            .to_server
            .extend(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let error = server.read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(TlsFailure::of(&error), Some(&TlsFailure::PlainHttp));
        let answer: Vec<u8> = wire.borrow_mut().to_client.drain(..).collect();
        let answer = String::from_utf8(answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{answer}"
        );
        // Sticky: the connection stays failed.
        let again = server.read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(TlsFailure::of(&again), Some(&TlsFailure::PlainHttp));
    }

    #[test]
    fn a_broken_handshake_is_a_handshake_failure() {
        let (_ca, acceptor) = setup();
        let (wire, mut server) = server_alone(&acceptor);
        // A handshake record whose body is not a ClientHello.
        wire.borrow_mut()
            .to_server
            .extend([22, 3, 1, 0, 4, 99, 0, 0, 0]);
        let error = server.read(&mut [0u8; 64]).unwrap_err();
        assert!(
            matches!(TlsFailure::of(&error), Some(TlsFailure::Handshake(_))),
            "{error}"
        );
        // The client is told why, with an alert record (type 21).
        assert_eq!(wire.borrow().to_client.front(), Some(&21));
    }

    #[test]
    fn a_full_socket_holds_at_most_one_record() {
        let (ca, acceptor) = setup();
        let mut pair = Pair::new(&acceptor, ca.client_config_for(&[&TLS13]));
        pair.handshake();
        pair.wire.borrow_mut().window = 1000;
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut offset = 0;
        let mut rounds = 0;
        while offset < message.len() {
            rounds += 1;
            assert!(rounds < 1000, "stuck at {offset}");
            match pair.server.write(&message[offset..]) {
                Ok(n) => {
                    assert!(n > 0 && n <= RECORD_PLAINTEXT, "took {n}");
                    offset += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(pair.server.pending_bytes() <= RECORD_PLAINTEXT + RECORD_OVERHEAD);
            // A held record goes before anything new is taken.
            if pair.server.pending_bytes() > 0 {
                assert_eq!(
                    pair.server.write(b"x").unwrap_err().kind(),
                    io::ErrorKind::WouldBlock
                );
            }
            pair.client_io();
            pair.server.flush().unwrap();
        }
        while pair.server.pending_bytes() > 0 {
            pair.client_io();
            pair.server.flush().unwrap();
        }
        pair.client_io();
        assert_eq!(pair.received, message);
    }

    #[test]
    fn small_slices_share_one_record_and_one_write() {
        let (ca, acceptor) = setup();
        let mut pair = Pair::new(&acceptor, ca.client_config_for(&[&TLS13]));
        pair.handshake();
        let writes = pair.wire.borrow().server_writes;
        let slices = [
            IoSlice::new(b"one "),
            IoSlice::new(b""),
            IoSlice::new(b"two "),
            IoSlice::new(b"three"),
        ];
        assert_eq!(pair.server.write_vectored(&slices).unwrap(), 13);
        assert_eq!(pair.wire.borrow().server_writes, writes + 1);
        pair.client_io();
        assert_eq!(pair.received, b"one two three");
    }

    #[test]
    fn close_notify_goes_both_ways() {
        let (ca, acceptor) = setup();
        let mut pair = Pair::new(&acceptor, ca.client_config_for(&[&TLS13]));
        pair.handshake();
        pair.server.write_all(b"bye").unwrap();
        pair.server.shutdown_write().unwrap();
        assert!(pair.wire.borrow().server_shut);
        assert_eq!(
            pair.server.write(b"more").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        pair.client_io();
        assert_eq!(pair.received, b"bye");
        assert!(pair.client_saw_close);

        let mut pair = Pair::new(&acceptor, ca.client_config_for(&[&TLS13]));
        pair.handshake();
        pair.client.writer().write_all(b"last").unwrap();
        pair.client.send_close_notify();
        pair.client_io();
        let mut buf = [0u8; 16];
        assert_eq!(pair.server.read(&mut buf).unwrap(), 4);
        assert_eq!(pair.server.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_second_connection_resumes_the_session() {
        let (ca, acceptor) = setup();
        for version in [&TLS13, &TLS12] {
            let client = ca.client_config_for(&[version]);
            let mut first = Pair::new(&acceptor, Arc::clone(&client));
            first.handshake();
            assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));
            let mut second = Pair::new(&acceptor, client);
            second.handshake();
            assert_eq!(
                second.client.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "{version:?}"
            );
        }
    }
}
