//! One client connection: its socket, its outgoing queue and its phase
//! (reading an HTTP request head, speaking WebSocket, or closing).
//!
//! tungstenite parses incoming frames and answers pings and closes; every outgoing
//! byte, including tungstenite's own replies, goes through the connection's
//! [`Outbox`], so shared frames and control frames stay in order.
//!
//! The stream is a type parameter ([`Stream`]) that defaults to `mio`'s `TcpStream`:
//! the service only ever uses that (monomorphised, no dynamic dispatch), and the fuzz
//! harness drives the same code over an in-memory stream.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::time::Instant;

use bytes::Bytes;
use mio::net::TcpStream;
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use crate::framescan::FrameScan;
use crate::http::{self, HeadError, RequestHead};
use crate::market::Subscription;
use crate::outbox::Outbox;

/// What a connection reads from and writes to: a byte stream whose write side can be
/// shut. `mio::net::TcpStream` in the service.
pub trait Stream: Read + Write {
    /// Shuts the write side (a TCP FIN), once the last queued byte is written.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// The TCP stream plus the queue of bytes waiting to be written to it.
///
/// As tungstenite's stream, writes go to the queue (never blocking, never lost) and
/// reads come from the socket.
///
/// Reads are bounded per turn: once the turn's byte budget is spent the socket reports
/// `WouldBlock`, so one client's stream of frames cannot hold the loop, whatever
/// tungstenite does with them.
#[derive(Debug)]
pub struct Socket<S = TcpStream> {
    /// The client's TCP stream.
    pub tcp: S,
    /// Bytes waiting to be written.
    pub outbox: Outbox,
    /// Bytes this turn may still read.
    budget: usize,
    /// A read was refused for want of budget: more may be waiting.
    starved: bool,
    /// Follows the frames read, to bound a message's fragments.
    scan: FrameScan,
    /// The scan found a message with too many fragments.
    too_many_fragments: bool,
}

impl<S: Read> Read for Socket<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.budget == 0 {
            self.starved = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let len = buf.len().min(self.budget);
        let n = self.tcp.read(&mut buf[..len])?;
        self.budget -= n;
        if self.scan.feed(&buf[..n]).is_err() {
            self.too_many_fragments = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many fragments in one message",
            ));
        }
        Ok(n)
    }
}

impl<S> Write for Socket<S> {
    /// tungstenite's own frames (pongs, close replies): a pong replaces one still
    /// queued, as RFC 6455 §5.5.3 allows, so a ping flood cannot grow the queue.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let frame = Bytes::copy_from_slice(buf);
        if is_pong(buf) {
            self.outbox.push_pong(frame);
        } else {
            self.outbox.push(frame);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request head, which must be complete by `deadline`.
    Http {
        /// Bytes read so far.
        head: Vec<u8>,
        /// When an incomplete head is given up on.
        deadline: Instant,
    },
    /// Speaking WebSocket.
    WebSocket(Box<WebSocketContext>),
    /// Our last bytes are queued. Once they are written the write side is shut; input
    /// is read and discarded until the peer closes or `deadline` passes.
    Closing {
        /// When the connection is dropped regardless.
        deadline: Instant,
        /// Whether the write side has been shut.
        shut: bool,
    },
}

/// What reading a WebSocket connection produced.
#[derive(Debug)]
pub enum Incoming {
    /// A text message.
    Text(tungstenite::Utf8Bytes),
    /// The turn's byte budget is spent; the client may have more to read.
    Yield,
    /// A binary message (not part of the protocol).
    Binary,
    /// A control frame (ping, pong, close), already handled.
    Control,
}

/// Why a connection cannot go on.
#[derive(Debug)]
pub enum Ended {
    /// The peer closed: a completed close handshake or EOF.
    Closed,
    /// An incoming message exceeded the size limit (close with 1009).
    TooLarge,
    /// The peer broke the WebSocket protocol (close with 1002).
    Protocol(String),
    /// A text message was not UTF-8 (close with 1007).
    InvalidText,
    /// A message came in more fragments than allowed (close with 1009).
    TooManyFragments,
    /// The socket failed.
    Io(io::Error),
}

/// Why a connection is served the operations endpoints only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsOnly {
    /// Every connection slot is taken.
    Full,
    /// Its address holds as many connections as it may.
    AddressFull,
    /// The service is shutting down.
    Stopping,
}

/// One client.
#[derive(Debug)]
pub struct Conn<S = TcpStream> {
    /// Socket and outgoing queue.
    pub socket: Socket<S>,
    /// Current phase.
    pub phase: Phase,
    /// The asset this client receives points of, if any.
    pub sub: Option<Subscription>,
    /// When the client last sent anything.
    pub last_heard: Instant,
    /// When an unanswered ping was sent.
    pub ping_sent: Option<Instant>,
    /// Accepted beyond a limit (or while stopping): only `/health` and `/metrics` are
    /// served, anything else gets 503 for this reason.
    pub ops_only: Option<OpsOnly>,
    /// The client's address, for the per-address connection limit.
    pub peer: Option<IpAddr>,
}

impl<S: Stream> Conn<S> {
    /// A new connection waiting for its request head until `deadline`.
    pub fn new(tcp: S, now: Instant, deadline: Instant) -> Conn<S> {
        Conn {
            socket: Socket {
                tcp,
                outbox: Outbox::default(),
                budget: 0,
                starved: false,
                scan: FrameScan::default(),
                too_many_fragments: false,
            },
            phase: Phase::Http {
                head: Vec::new(),
                deadline,
            },
            sub: None,
            last_heard: now,
            ping_sent: None,
            ops_only: None,
            peer: None,
        }
    }

    /// Reads what is available of the request head. `Ok(None)`: not complete yet.
    /// `Err(Some(status))`: answer with that status and close. `Err(None)`: just drop.
    pub fn read_head(&mut self) -> Result<Option<RequestHead>, Option<u16>> {
        let Phase::Http { head, .. } = &mut self.phase else {
            return Ok(None);
        };
        let mut chunk = [0u8; 2048];
        loop {
            match self.socket.tcp.read(&mut chunk) {
                Ok(0) => return Err(None),
                Ok(n) => head.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(None),
            }
            match http::parse_head(head) {
                Ok(None) => continue,
                Ok(Some(parsed)) => return Ok(Some(parsed)),
                Err(HeadError::Malformed) => return Err(Some(400)),
                Err(HeadError::TooLarge) => return Err(Some(431)),
            }
        }
    }

    /// Switches to WebSocket after queueing the `101`; bytes after the head are kept
    /// as the start of the first frame.
    pub fn upgrade(&mut self, head_len: usize, key: &str, config: WebSocketConfig) {
        let tail = match &mut self.phase {
            Phase::Http { head, .. } => head.split_off(head_len.min(head.len())),
            _ => Vec::new(),
        };
        if self.socket.scan.feed(&tail).is_err() {
            self.socket.too_many_fragments = true;
        }
        self.socket
            .outbox
            .push(Bytes::from(http::upgrade_response(key)));
        let context = WebSocketContext::from_partially_read(tail, Role::Server, Some(config));
        self.phase = Phase::WebSocket(Box::new(context));
    }

    /// Reads the next message. `Ok(None)` means the socket has nothing more for now (or
    /// the connection is not speaking WebSocket). Control frames are handled here and
    /// reported as [`Incoming::Control`], so the caller can bound the work per turn.
    pub fn read_message(&mut self, now: Instant) -> Result<Option<Incoming>, Ended> {
        let Phase::WebSocket(ws) = &mut self.phase else {
            return Ok(None);
        };
        if self.socket.too_many_fragments {
            return Err(Ended::TooManyFragments);
        }
        loop {
            match ws.read(&mut self.socket) {
                Ok(message) => {
                    self.last_heard = now;
                    match message {
                        Message::Text(text) => return Ok(Some(Incoming::Text(text))),
                        Message::Binary(_) => return Ok(Some(Incoming::Binary)),
                        Message::Pong(_) => {
                            self.ping_sent = None;
                            return Ok(Some(Incoming::Control));
                        }
                        // Pings are answered and closes acknowledged by tungstenite, into
                        // our outbox; a close then ends the next read with ConnectionClosed.
                        Message::Ping(_) | Message::Close(_) | Message::Frame(_) => {
                            return Ok(Some(Incoming::Control));
                        }
                    }
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if std::mem::take(&mut self.socket.starved) {
                        return Ok(Some(Incoming::Yield));
                    }
                    return Ok(None);
                }
                Err(WsError::Io(_)) if self.socket.too_many_fragments => {
                    return Err(Ended::TooManyFragments);
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Err(Ended::Closed);
                }
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Err(Ended::Closed);
                }
                Err(WsError::Capacity(
                    CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders,
                )) => return Err(Ended::TooLarge),
                Err(WsError::Io(e)) => return Err(Ended::Io(e)),
                Err(WsError::Utf8(_)) => return Err(Ended::InvalidText),
                Err(e) => return Err(Ended::Protocol(e.to_string())),
            }
        }
    }

    /// Starts a turn: at most `bytes` are read from the socket until the next turn.
    pub fn start_turn(&mut self, bytes: usize) {
        self.socket.budget = bytes;
        self.socket.starved = false;
    }

    /// Queues a WebSocket ping.
    pub fn ping(&mut self, now: Instant) {
        if let Phase::WebSocket(ws) = &mut self.phase {
            // Writes go to the outbox and cannot fail; an error only means closing began.
            let _ = ws.write(&mut self.socket, Message::Ping(Bytes::new()));
            self.ping_sent = Some(now);
        }
    }

    /// Starts closing: a WebSocket gets a close frame with `code` and `reason` (after
    /// dropping queued frames not yet started when `discard` is set); then the
    /// connection lingers until its bytes are out and the peer closes, or `deadline`.
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        discard: bool,
        deadline: Instant,
    ) {
        if discard {
            self.socket.outbox.discard_unstarted();
        }
        if let Phase::WebSocket(ws) = &mut self.phase {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = ws.close(&mut self.socket, Some(frame));
            let _ = ws.flush(&mut self.socket);
        }
        self.linger(deadline);
    }

    /// Ends the connection after what is queued: the write side is shut once the
    /// outbox is empty, and the connection is dropped at EOF or `deadline`.
    pub fn linger(&mut self, deadline: Instant) {
        if !matches!(self.phase, Phase::Closing { .. }) {
            self.phase = Phase::Closing {
                deadline,
                shut: false,
            };
        }
    }

    /// Writes what the outbox holds; returns the bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        if let Phase::WebSocket(ws) = &mut self.phase {
            // Moves any automatic pong or close reply into the outbox.
            match ws.flush(&mut self.socket) {
                Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {}
                Err(WsError::Io(e)) => return Err(e),
                Err(_) => {}
            }
        }
        let written = self.socket.outbox.write_to(&mut self.socket.tcp)?;
        if self.socket.outbox.is_empty()
            && let Phase::Closing { shut, .. } = &mut self.phase
            && !*shut
        {
            *shut = true;
            // Already shut or reset by the peer: nothing left to tell it.
            let _ = self.socket.tcp.shutdown_write();
        }
        Ok(written)
    }

    /// In the closing phase, reads and discards input. Returns true once the peer has
    /// closed (or the socket failed) and the connection can be dropped.
    pub fn drain_input(&mut self) -> bool {
        let mut scratch = [0u8; 1024];
        // A peer that keeps sending while we close is not worth more than this.
        for _ in 0..64 {
            match self.socket.tcp.read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        true
    }

    /// Whether the connection is speaking WebSocket (not reading a head, not closing).
    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::WebSocket(_))
    }
}

/// Whether `buf` is exactly one unmasked pong frame, as tungstenite writes them.
fn is_pong(buf: &[u8]) -> bool {
    match buf {
        [0x8A, len, ..] => *len < 126 && buf.len() == 2 + usize::from(*len),
        _ => false,
    }
}
