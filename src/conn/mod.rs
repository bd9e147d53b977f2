//! One client connection, driven step by step: reading its request head, routing it,
//! speaking WebSocket, answering, flushing, and ending.
//!
//! [`Conn`] is the connection driver: every step the reactor takes for one connection is
//! a method here, given a [`Context`] (the configuration, the market, the metrics and the
//! reactor's buffers, lent for the step) and returning what only the reactor can do (a
//! [`Step`]: answer a probe, end the connection, come back for more input). The reactor's
//! connection table (`reactor/clients.rs`) and the fuzz target both drive connections
//! through these methods, so what is fuzzed is what runs.
//!
//! WebSocket frames are read by [`reader`] from the reactor's one read buffer; every
//! outgoing byte goes through the connection's [`Outbox`], so shared frames (a tick's
//! point, an asset's history) and the connection's own (pongs, close) stay in order.
//!
//! The stream is a type parameter ([`Stream`]), `mio`'s `TcpStream` in the service
//! (monomorphised, no dynamic dispatch) and an in-memory client ([`MemoryPeer`]) in the
//! unit tests and the fuzz target.

#[cfg(any(test, fuzzing))]
mod memory;
mod reader;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;
use mio::net::TcpStream;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::config::Config;
use crate::deflate::{self, Compressor, Inflater};
use crate::frame::{self, text_frame};
use crate::http::{self, HeadError, RequestHead, Route};
use crate::market::Market;
use crate::metrics::{Action, DropReason, Encoding, Metrics};
use crate::outbox::Outbox;
use crate::protocol::{self, Request, RequestError};
use crate::tls::stream::TlsFailure;

#[cfg(any(test, fuzzing))]
pub use memory::{MemoryPeer, MemoryService};
use reader::{Event, Limits, Reader, Violation};

/// Frames read from one client before the others get their turn.
const READ_BUDGET: usize = 32;

/// Bytes read from one client before the others get their turn: also the size of the
/// reactor's one read buffer.
const READ_BUDGET_BYTES: usize = 16 * 1024;

/// How long a closing connection may linger before it is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// A subscribed client due a ping gets it with its next point; only when no tick has
/// come for this long past the ping interval is it sent on its own.
const PING_WITH_TICK_GRACE: Duration = Duration::from_secs(2);

/// The test page, embedded in the binary.
const PAGE: &[u8] = include_bytes!("../../static/index.html");

/// What a connection reads from and writes to: a byte stream whose write side can be
/// shut. `mio::net::TcpStream` in the service.
pub trait Stream: Read + Write {
    /// Shuts the write side (a TCP FIN), once the last queued byte is written.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Bytes accepted by `write` that have not reached the kernel yet: counted against
    /// the slow-consumer limit; a closing connection is shut only once this is 0.
    fn pending_bytes(&self) -> usize {
        0
    }
}

impl Stream for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Owned by the reactor and lent to every step: the one buffer every connection reads
/// into, the one inflater and compressor of permessage-deflate, and the replies every
/// connection shares.
#[derive(Debug)]
pub struct Shared {
    /// Where a turn's input is read to; a connection keeps only what a partly read
    /// frame needs.
    read_buf: Box<[u8]>,
    /// Inflates every connection's compressed messages, one at a time.
    inflater: Inflater,
    /// Compresses large messages for the connections that negotiated it.
    compressor: Compressor,
    /// The encoded `unsubscribed` reply.
    unsubscribed: Bytes,
}

impl Shared {
    /// The buffers for connections served with `config`.
    pub fn new(config: &Config) -> Shared {
        Shared {
            read_buf: vec![0; READ_BUDGET_BYTES].into_boxed_slice(),
            inflater: Inflater::default(),
            compressor: Compressor::new(config.compression_level),
            unsubscribed: text_frame(protocol::UNSUBSCRIBED_MESSAGE),
        }
    }
}

/// What a step on one connection is lent by the reactor.
pub struct Context<'a> {
    /// The service's settings.
    pub config: &'a Config,
    /// Assets, histories and subscriptions.
    pub market: &'a mut Market,
    /// Counters the step adds to.
    pub metrics: &'a mut Metrics,
    /// The reactor's buffers.
    pub shared: &'a mut Shared,
    /// The time of the step.
    pub now: Instant,
}

/// A request whose answer needs the whole service's state, which the reactor builds
/// and hands back through [`Conn::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
}

/// How a connection is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doom {
    /// Drop the socket now.
    Drop(Option<DropReason>),
    /// Send a close frame (dropping unsent frames if `discard`), then linger.
    Close(CloseCode, &'static str, bool, Option<DropReason>),
}

/// The end of a client that does not read what it is sent.
pub const SLOW_CONSUMER: Doom = Doom::Close(
    CloseCode::Policy,
    "slow consumer",
    true,
    Some(DropReason::SlowConsumer),
);

/// What the reactor has to do after a step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// A probe to answer (with whether it was a `HEAD` request).
    pub probe: Option<(Probe, bool)>,
    /// How the connection ends, if it does.
    pub doom: Option<Doom>,
    /// The turn's budget ran out with input left: read again after the other events.
    pub more_to_read: bool,
}

impl Step {
    fn doom(doom: Doom) -> Step {
        Step {
            doom: Some(doom),
            ..Step::default()
        }
    }
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

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading the HTTP request head, which must be complete by `deadline`.
    Http {
        /// The head so far, when it did not come in one read.
        head: Vec<u8>,
        /// When an incomplete head is given up on.
        deadline: Instant,
    },
    /// Speaking WebSocket.
    WebSocket(Reader),
    /// Our last bytes are queued. Once they are written the write side is shut; input
    /// is read and discarded until the peer closes or `deadline` passes.
    Closing {
        /// When the connection is dropped regardless.
        deadline: Instant,
        /// Whether the write side has been shut.
        shut: bool,
    },
}

/// What one WebSocket frame or message asks of the connection, owned, so that the
/// read buffer is free again while it is answered.
enum Incoming {
    Request(Result<Request, RequestError>),
    Binary,
    Ping(Bytes),
    Pong,
    Close(Bytes),
}

/// One client connection.
#[derive(Debug)]
pub struct Conn<S = TcpStream> {
    stream: S,
    outbox: Outbox,
    phase: Phase,
    /// When the client last sent a frame.
    last_heard: Instant,
    /// When an unanswered ping was sent.
    ping_sent: Option<Instant>,
    /// Accepted beyond a limit (or while stopping): only `/health` and `/metrics` are
    /// served, anything else gets 503 for this reason.
    pub ops_only: Option<OpsOnly>,
    /// The client's address, for the per-address connection limit.
    pub peer: Option<IpAddr>,
    /// The connection asked for `/health` or `/metrics`.
    probing: bool,
    /// The connection negotiated permessage-deflate.
    deflate: bool,
}

impl<S: Stream> Conn<S> {
    /// A new connection waiting for its request head until `deadline`.
    pub fn new(stream: S, now: Instant, deadline: Instant) -> Conn<S> {
        Conn {
            stream,
            outbox: Outbox::default(),
            phase: Phase::Http {
                head: Vec::new(),
                deadline,
            },
            last_heard: now,
            ping_sent: None,
            ops_only: None,
            peer: None,
            probing: false,
            deflate: false,
        }
    }

    /// Whether the connection negotiated permessage-deflate.
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// The stream, for registering it with the poller.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Whether the connection is speaking WebSocket (not reading a head, not closing).
    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::WebSocket(_))
    }

    /// Whether the connection is still waiting for its request head, and has not asked
    /// for a probe: a reserve connection that may make room for a newer one.
    pub fn is_waiting_for_head(&self) -> bool {
        matches!(self.phase, Phase::Http { .. }) && !self.probing
    }

    /// What waits for this client behind the frame being written: the slow-consumer
    /// measure.
    pub fn backlog(&self) -> usize {
        self.outbox.backlog_bytes() + self.stream.pending_bytes()
    }

    /// Whether every byte queued for this client has reached the kernel.
    pub fn is_drained(&self) -> bool {
        self.outbox.is_empty() && self.stream.pending_bytes() == 0
    }

    /// Whether more waits for this client than the slow-consumer `limit` allows.
    pub fn is_over_limit(&self, limit: usize) -> bool {
        self.backlog() > limit
    }

    // ---- reading -----------------------------------------------------------------

    /// Reads what the client sent and answers it, as far as one turn allows.
    pub fn on_readable(&mut self, key: usize, cx: &mut Context<'_>) -> Step {
        match self.phase {
            Phase::Http { .. } => self.read_head(key, cx),
            Phase::WebSocket(_) => self.read_frames(key, cx, 0),
            Phase::Closing { .. } => {
                if self.drain_input(cx.shared) {
                    return Step::doom(Doom::Drop(None));
                }
                Step::default()
            }
        }
    }

    /// Reads the request head; once it is complete, routes it.
    fn read_head(&mut self, key: usize, cx: &mut Context<'_>) -> Step {
        let Phase::Http { head, .. } = &mut self.phase else {
            return Step::default();
        };
        let buf = &mut cx.shared.read_buf;
        loop {
            // Never more than one byte past the longest head: a head over the limit is
            // refused without reading on.
            let room = (http::MAX_HEAD_BYTES + 1)
                .saturating_sub(head.len())
                .clamp(1, buf.len());
            let n = match self.stream.read(&mut buf[..room]) {
                Ok(0) => return Step::doom(Doom::Drop(None)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("connection {key}: {e}");
                    return Step::doom(Doom::Drop(tls_failure(&e)));
                }
            };
            // Usually the head comes whole in one read and is parsed where it was read.
            let held = !head.is_empty();
            if held {
                head.extend_from_slice(&buf[..n]);
            }
            let bytes: &[u8] = if held { head } else { &buf[..n] };
            let parsed = match http::parse_head(bytes) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => {
                    if !held {
                        head.extend_from_slice(&buf[..n]);
                    }
                    continue;
                }
                Err(error) => {
                    let (status, text) = match error {
                        HeadError::TooLarge => (431, "request head too large"),
                        HeadError::Malformed => (400, "malformed HTTP request"),
                    };
                    return self.refuse(key, status, text, false, None, cx);
                }
            };
            // Bytes after the head (a client may send its first frames at once) go to
            // the front of the read buffer, for the WebSocket reader.
            let tail = bytes.len() - parsed.len;
            if held {
                buf[..tail].copy_from_slice(&head[parsed.len..]);
            } else {
                buf.copy_within(parsed.len..n, 0);
            }
            return self.route(key, parsed, tail, cx);
        }
    }

    /// Answers a complete request head.
    fn route(&mut self, key: usize, head: RequestHead, tail: usize, cx: &mut Context<'_>) -> Step {
        let head_only = head.method == "HEAD";
        let route = match http::route(&head, cx.config.enable_ui) {
            route @ (Route::Health | Route::Metrics) => route,
            _ if self.ops_only.is_some() => {
                let (reason, text) = match self.ops_only {
                    Some(OpsOnly::AddressFull) => (
                        DropReason::AddressLimit,
                        "connection limit of this address reached",
                    ),
                    Some(OpsOnly::Stopping) => {
                        (DropReason::ConnectionLimit, "the service is shutting down")
                    }
                    _ => (DropReason::ConnectionLimit, "connection limit reached"),
                };
                return self.refuse(key, 503, text, head_only, Some(reason), cx);
            }
            Route::WebSocket(_)
                if !cx
                    .config
                    .allowed_origins
                    .allow(head.origin.as_deref(), head.host.as_deref()) =>
            {
                cx.metrics
                    .clients_dropped_total
                    .add(DropReason::OriginRefused);
                debug!("connection {key}: origin {:?} is not allowed", head.origin);
                Route::Error(403, "this origin may not open a WebSocket here")
            }
            route => route,
        };
        let response = match route {
            Route::WebSocket(ws_key) => {
                self.deflate = cx.config.compression
                    && head.extensions.as_deref().is_some_and(deflate::accepts);
                let extension = self.deflate.then_some(deflate::ACCEPTED);
                self.outbox
                    .push_pinned(Bytes::from(http::upgrade_response(&ws_key, extension)));
                self.phase = Phase::WebSocket(Reader::default());
                cx.metrics.websocket_upgrades_total += 1;
                cx.metrics.deflate_connections += u64::from(self.deflate);
                debug!("connection {key} upgraded to WebSocket");
                return self.read_frames(key, cx, tail);
            }
            Route::Health | Route::Metrics => {
                self.probing = true;
                let probe = if route == Route::Health {
                    Probe::Health
                } else {
                    Probe::Metrics
                };
                return Step {
                    probe: Some((probe, head_only)),
                    ..Step::default()
                };
            }
            Route::Page => http::response(200, "text/html; charset=utf-8", "", PAGE, head_only),
            Route::Error(status, text) => http::error_response(status, text, head_only),
        };
        self.respond(key, response, cx.now, cx.metrics)
    }

    /// Answers with an error status and ends the connection: at once for a connection
    /// in the reserve (its slot is for probes, and the linger must not hold it),
    /// otherwise after the response is written.
    fn refuse(
        &mut self,
        key: usize,
        status: u16,
        text: &str,
        head_only: bool,
        reason: Option<DropReason>,
        cx: &mut Context<'_>,
    ) -> Step {
        if let Some(reason) = reason {
            cx.metrics.clients_dropped_total.add(reason);
        }
        let response = http::error_response(status, text, head_only);
        let step = self.respond(key, response, cx.now, cx.metrics);
        if self.ops_only.is_some() {
            // What the socket took now is all the client gets.
            return Step::doom(Doom::Drop(None));
        }
        step
    }

    /// Reads and answers WebSocket frames for one turn: at most [`READ_BUDGET`] messages
    /// and [`READ_BUDGET_BYTES`] read. `ready` bytes at the front of the read buffer
    /// were read already (they followed the request head).
    fn read_frames(&mut self, key: usize, cx: &mut Context<'_>, ready: usize) -> Step {
        let limit = cx.config.client_queue_bytes;
        let limits = Limits {
            max_message: cx.config.max_message_bytes,
            deflate: self.deflate,
        };
        let mut budget = READ_BUDGET_BYTES;
        let mut filled = ready;
        if let Phase::WebSocket(reader) = &mut self.phase
            && ready == 0
        {
            filled = reader.unstash(&mut cx.shared.read_buf);
        }
        let mut at = 0;
        let mut handled = 0;
        let mut step = Step::default();
        'turn: loop {
            if at == filled {
                if budget == 0 {
                    step.more_to_read = true;
                    break;
                }
                let room = budget.min(cx.shared.read_buf.len());
                match self.stream.read(&mut cx.shared.read_buf[..room]) {
                    Ok(0) => {
                        step.doom = Some(Doom::Drop(None));
                        break;
                    }
                    Ok(n) => {
                        budget -= n;
                        filled = n;
                        at = 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        debug!("connection {key}: {e}");
                        step.doom = Some(Doom::Drop(None));
                        break;
                    }
                }
            }
            while at < filled {
                if self.is_over_limit(limit) {
                    // Reading on would only queue more replies it does not read: write
                    // what the socket takes, and stop here if the queue is still full.
                    if let Err(doom) = self.flush_or_doom(key, cx.metrics) {
                        step.doom = Some(doom);
                        break 'turn;
                    }
                    if self.is_over_limit(limit) {
                        step.doom = Some(SLOW_CONSUMER);
                        break 'turn;
                    }
                }
                let Phase::WebSocket(reader) = &mut self.phase else {
                    break 'turn;
                };
                let input = &mut cx.shared.read_buf[at..filled];
                let (used, incoming) = match reader.next(input, limits, &mut cx.shared.inflater) {
                    Ok((used, event)) => {
                        if let Some(Event::Text(_, true) | Event::Binary(true)) = event {
                            cx.metrics.messages_inflated_total += 1;
                        }
                        (used, event.map(Incoming::from))
                    }
                    Err(violation) => {
                        debug!("connection {key}: {violation:?}");
                        if let Violation::Inflate(error) = violation {
                            cx.metrics.inflate_failures_total.add(error);
                        }
                        let why = match violation.close_code() {
                            CloseCode::Size => DropReason::MessageTooLarge,
                            _ => DropReason::ProtocolError,
                        };
                        step.doom = Some(Doom::Close(
                            violation.close_code(),
                            violation.reason(),
                            false,
                            Some(why),
                        ));
                        break 'turn;
                    }
                };
                at += used;
                let Some(incoming) = incoming else {
                    continue;
                };
                self.last_heard = cx.now;
                if self.answer(key, incoming, cx) {
                    // The client closed: nothing more is read.
                    break 'turn;
                }
                handled += 1;
                if handled == READ_BUDGET {
                    if at < filled {
                        self.stash(at, filled, cx);
                    }
                    step.more_to_read = true;
                    break 'turn;
                }
            }
        }
        if let Phase::WebSocket(reader) = &mut self.phase {
            reader.release();
        }
        // Writes the replies; replies (pongs included) piling up for a client that does
        // not read them make it a slow consumer.
        if step.doom.is_none() {
            if let Err(doom) = self.flush_or_doom(key, cx.metrics) {
                step.doom = Some(doom);
            } else if self.is_over_limit(limit) {
                step.doom = Some(SLOW_CONSUMER);
            }
        }
        step
    }

    /// Keeps the bytes `at..filled` of the read buffer, read but not yet parsed when the
    /// turn's message budget ran out, for the next turn.
    fn stash(&mut self, at: usize, filled: usize, cx: &mut Context<'_>) {
        if let Phase::WebSocket(reader) = &mut self.phase {
            reader.stash(&cx.shared.read_buf[at..filled]);
        }
    }

    /// Answers one frame or message; returns true once the client has closed.
    fn answer(&mut self, key: usize, incoming: Incoming, cx: &mut Context<'_>) -> bool {
        match incoming {
            Incoming::Request(Ok(request)) => {
                if let Err(error) = self.handle_request(key, request, cx) {
                    self.reply_error(key, &error, cx);
                }
            }
            Incoming::Request(Err(error)) => self.reply_error(key, &error, cx),
            Incoming::Binary => self.reply_error(key, &protocol::binary_frame_error(), cx),
            // Of several pings before the client reads, only the latest is answered.
            Incoming::Ping(pong) => self.outbox.push_pong(pong),
            Incoming::Pong => self.ping_sent = None,
            Incoming::Close(echo) => {
                // The close handshake: our close echoes the client's, then the
                // connection lingers until the client has it and closes.
                self.outbox.push(echo);
                cx.market.unsubscribe(key);
                self.linger(cx.now + CLOSE_LINGER);
                return true;
            }
        }
        false
    }

    fn handle_request(
        &mut self,
        key: usize,
        request: Request,
        cx: &mut Context<'_>,
    ) -> Result<(), RequestError> {
        match request {
            Request::Assets => {
                cx.metrics.requests_total.add(Action::Assets);
                self.send(cx.market.assets_frame(), cx.metrics);
            }
            Request::Subscribe { asset_id, since } => {
                cx.metrics.requests_total.add(Action::Subscribe);
                let index = cx
                    .market
                    .index_of(asset_id)
                    .ok_or(RequestError::UnknownAsset(asset_id))?;
                let history = if self.deflate {
                    let (compressor, metrics) = (&mut cx.shared.compressor, &mut *cx.metrics);
                    let min = cx.config.compression_min_bytes;
                    let mut compress = |payload: &[u8]| {
                        if payload.len() < min {
                            return text_frame(payload);
                        }
                        let started = Instant::now();
                        let frame = compressor.text_frame(payload);
                        metrics.history_compressions_total += 1;
                        metrics
                            .history_compression_seconds
                            .observe(started.elapsed());
                        frame
                    };
                    cx.market.subscribe(key, index, since, Some(&mut compress))
                } else {
                    cx.market.subscribe(key, index, since, None)
                };
                self.send(history, cx.metrics);
            }
            Request::Unsubscribe => {
                cx.metrics.requests_total.add(Action::Unsubscribe);
                cx.market.unsubscribe(key);
                self.send(cx.shared.unsubscribed.clone(), cx.metrics);
            }
        }
        Ok(())
    }

    fn reply_error(&mut self, key: usize, error: &RequestError, cx: &mut Context<'_>) {
        cx.metrics.request_errors_total.add(error.error_type());
        debug!("connection {key}: {} {error}", error.error_type().as_str());
        self.send(text_frame(&protocol::error_message(error)), cx.metrics);
    }

    /// Queues a frame for the client (it is written when the connection is flushed).
    fn send(&mut self, frame: Bytes, metrics: &mut Metrics) {
        metrics.messages_sent_total += 1;
        metrics
            .message_bytes_total
            .add_many(Encoding::of(&frame), frame.len() as u64);
        self.outbox.push(frame);
    }

    /// In the closing phase, reads and discards input. Returns true once the peer has
    /// closed (or the socket failed) and the connection can be dropped.
    fn drain_input(&mut self, shared: &mut Shared) -> bool {
        // A peer that keeps sending while we close is not worth more than this.
        for _ in 0..4 {
            match self.stream.read(&mut shared.read_buf[..4096]) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        true
    }

    // ---- writing -----------------------------------------------------------------

    /// Queues a complete HTTP response and ends the connection after it.
    pub fn respond(
        &mut self,
        key: usize,
        response: Vec<u8>,
        now: Instant,
        metrics: &mut Metrics,
    ) -> Step {
        self.outbox.push(Bytes::from(response));
        self.linger(now + CLOSE_LINGER);
        match self.flush_or_doom(key, metrics) {
            Ok(()) => Step::default(),
            Err(doom) => Step::doom(doom),
        }
    }

    /// Writes what the connection has queued; returns the bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        match self.stream.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        let written = self.outbox.write_to(&mut self.stream)?;
        if self.is_drained()
            && let Phase::Closing { shut, .. } = &mut self.phase
            && !*shut
        {
            *shut = true;
            // Already shut or reset by the peer: nothing left to tell it.
            let _ = self.stream.shutdown_write();
        }
        Ok(written)
    }

    /// [`Conn::flush`], counting what was written; a failed socket is to be dropped.
    fn flush_or_doom(&mut self, key: usize, metrics: &mut Metrics) -> Result<(), Doom> {
        match self.flush() {
            Ok(written) => {
                metrics.bytes_sent_total += written as u64;
                Ok(())
            }
            Err(e) => {
                debug!("connection {key}: write failed: {e}");
                Err(Doom::Drop(None))
            }
        }
    }

    /// Sends a tick's point frame, shared by every subscriber, with a ping if one is
    /// due; returns the bytes written and how the connection ends if it must.
    pub fn send_point(
        &mut self,
        frame: &Bytes,
        now: Instant,
        config: &Config,
    ) -> (usize, Option<Doom>) {
        if self.ping_sent.is_none() && now.duration_since(self.last_heard) >= config.ping_interval {
            self.ping(now);
        }
        match self.outbox.send(frame, &mut self.stream) {
            Ok(written) => (
                written,
                self.is_over_limit(config.client_queue_bytes)
                    .then_some(SLOW_CONSUMER),
            ),
            Err(_) => (0, Some(Doom::Drop(None))),
        }
    }

    /// Queues a WebSocket ping.
    fn ping(&mut self, now: Instant) {
        if self.is_websocket() {
            self.outbox.push(Bytes::from_static(frame::PING));
            self.ping_sent = Some(now);
        }
    }

    // ---- deadlines and endings ---------------------------------------------------

    /// Once a second: pings a quiet client (a `subscribed` one gets its ping with the
    /// next point unless the feed is quiet too) and ends one past a deadline. Returns
    /// the bytes written and the connection's end, if due.
    pub fn sweep(
        &mut self,
        now: Instant,
        config: &Config,
        subscribed: bool,
    ) -> (usize, Option<Doom>) {
        match &self.phase {
            Phase::Http { deadline, .. } if now >= *deadline => {
                (0, Some(Doom::Drop(Some(DropReason::HandshakeTimeout))))
            }
            Phase::Closing { deadline, .. } if now >= *deadline => (0, Some(Doom::Drop(None))),
            Phase::WebSocket(_) => match self.ping_sent {
                Some(sent) if now.duration_since(sent) >= config.pong_timeout => {
                    (0, Some(Doom::Drop(Some(DropReason::PongTimeout))))
                }
                None if now.duration_since(self.last_heard)
                    >= config.ping_interval
                        + if subscribed {
                            PING_WITH_TICK_GRACE
                        } else {
                            Duration::ZERO
                        } =>
                {
                    self.ping(now);
                    match self.flush() {
                        Ok(written) => (written, None),
                        Err(_) => (0, Some(Doom::Drop(None))),
                    }
                }
                _ => (0, None),
            },
            _ => (0, None),
        }
    }

    /// Carries out `doom`: a close frame (then the linger) or nothing but ending the
    /// subscription; returns true when the connection is to be dropped now.
    pub fn end(&mut self, key: usize, doom: Doom, market: &mut Market, now: Instant) -> bool {
        market.unsubscribe(key);
        match doom {
            Doom::Drop(_) => true,
            Doom::Close(_, _, _, _) if matches!(self.phase, Phase::Closing { .. }) => false,
            Doom::Close(code, reason, discard, _) => {
                self.close(code, reason, discard, now + CLOSE_LINGER);
                self.flush().is_err()
            }
        }
    }

    /// Starts the shutdown for this connection: a WebSocket is to be closed with 1001
    /// (returned), a connection still reading its head is served probes only.
    pub fn stop(&mut self) -> Option<Doom> {
        match self.phase {
            Phase::WebSocket(_) => Some(Doom::Close(
                CloseCode::Away,
                "server shutting down",
                false,
                None,
            )),
            Phase::Http { .. } => {
                self.ops_only = Some(OpsOnly::Stopping);
                None
            }
            Phase::Closing { .. } => None,
        }
    }

    /// Starts closing: a WebSocket gets a close frame with `code` and `reason` (after
    /// dropping queued frames not yet started when `discard` is set); then the
    /// connection lingers until its bytes are out and the peer closes, or `deadline`.
    fn close(&mut self, code: CloseCode, reason: &'static str, discard: bool, deadline: Instant) {
        if discard {
            self.outbox.discard_unstarted();
        }
        if self.is_websocket() {
            self.outbox
                .push(frame::close_frame(Some((code.into(), reason))));
        }
        self.linger(deadline);
    }

    /// Ends the connection after what is queued: the write side is shut once the
    /// outbox is empty, and the connection is dropped at EOF or `deadline`.
    fn linger(&mut self, deadline: Instant) {
        if !matches!(self.phase, Phase::Closing { .. }) {
            self.phase = Phase::Closing {
                deadline,
                shut: false,
            };
        }
    }
}

/// Why a TLS connection failed before its request head, as counted in
/// `clients_dropped_total` (`None` for anything else: a reset, an EOF).
fn tls_failure(error: &io::Error) -> Option<DropReason> {
    match TlsFailure::of(error)? {
        TlsFailure::PlainHttp => Some(DropReason::PlainHttp),
        TlsFailure::Handshake(_) | TlsFailure::Session(_) | TlsFailure::Oversized => {
            Some(DropReason::TlsHandshake)
        }
    }
}

impl From<Event<'_>> for Incoming {
    fn from(event: Event<'_>) -> Incoming {
        match event {
            Event::Text(text, _) => Incoming::Request(protocol::parse_request(text)),
            Event::Binary(_) => Incoming::Binary,
            Event::Ping(payload) => Incoming::Ping(frame::pong_frame(payload)),
            Event::Pong => Incoming::Pong,
            Event::Close(payload) => Incoming::Close(frame::close_frame(
                payload.map(|(code, reason)| (code.into(), reason)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    /// A client frame (final, masked with a key of zeros, payload under 126 bytes).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    /// A service whose assets have a point in each of five seconds.
    fn service() -> MemoryService {
        let mut service = MemoryService::new(Config::from_lookup(|_| None).unwrap());
        for _ in 0..5 {
            service.tick();
        }
        service
    }

    impl MemoryService {
        /// A client that upgrades, subscribes to asset 1 and stays open.
        fn subscriber(&self) -> Conn<MemoryPeer> {
            let subscribe = br#"{"action":"subscribe","message":{"assetId":1}}"#;
            let input = [UPGRADE, &client_frame(1, subscribe)].concat();
            let mut conn = Conn::new(MemoryPeer::sending(&input), self.now, self.now);
            conn.stream_mut().closes = false;
            conn
        }

        /// A readable event on `conn` and a flush, as the reactor does them.
        fn read(&mut self, conn: &mut Conn<MemoryPeer>) -> Step {
            let step = conn.on_readable(0, &mut self.cx());
            conn.flush().unwrap();
            step
        }
    }

    fn written(conn: &mut Conn<MemoryPeer>) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut conn.stream_mut().written)).into_owned()
    }

    #[test]
    fn a_head_arriving_byte_by_byte_is_answered_once_it_is_whole() {
        let mut service = service();
        let mut peer = MemoryPeer::sending(UPGRADE);
        (peer.sent, peer.closes) = (0, false);
        let mut conn = Conn::new(peer, service.now, service.now + Duration::from_secs(5));
        for sent in 1..=UPGRADE.len() {
            conn.stream_mut().sent = sent;
            assert_eq!(service.read(&mut conn), Step::default());
            let out = written(&mut conn);
            match sent == UPGRADE.len() {
                true => assert!(out.starts_with("HTTP/1.1 101 "), "{out}"),
                false => assert_eq!(out, "", "answered after {sent} bytes"),
            }
        }
        assert!(conn.is_websocket());
    }

    #[test]
    fn a_subscriber_gets_the_history_then_each_new_point() {
        let mut service = service();
        let mut conn = service.subscriber();
        service.read(&mut conn);
        let out = written(&mut conn);
        assert!(
            out.contains("\"asset_history\"") && out.contains("1700000005"),
            "{out}"
        );
        assert_eq!(service.market.subscribers(0), &[0]);
        let (index, frame) = service.tick().swap_remove(0);
        assert_eq!(index, 0, "asset 1's point");
        assert_eq!(
            conn.send_point(&frame, service.now, &service.config).1,
            None
        );
        let out = written(&mut conn);
        assert!(
            out.contains("\"point\"") && out.contains("1700000006"),
            "{out}"
        );
    }

    #[test]
    fn a_client_close_is_echoed_and_the_write_side_shut_after_it() {
        let mut service = service();
        let input = [UPGRADE, &client_frame(8, b"\x03\xE8bye")].concat();
        let mut conn = Conn::new(MemoryPeer::sending(&input), service.now, service.now);
        let step = service.read(&mut conn);
        if let Some(doom) = step.doom {
            assert!(!conn.end(0, doom, &mut service.market, service.now));
        }
        conn.flush().unwrap();
        let out = conn.stream_mut().written.clone();
        assert!(out.ends_with(b"\x88\x05\x03\xE8bye"), "{out:?}");
        assert!(
            conn.stream_mut().shut,
            "the write side is shut once the close is out"
        );
    }

    #[test]
    fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
        let mut service = service();
        let mut conn = service.subscriber();
        conn.stream_mut().room = 0;
        service.read(&mut conn);
        let mut doom = None;
        for _ in 0..100_000 {
            let (_, frame) = service.tick().swap_remove(0);
            doom = conn.send_point(&frame, service.now, &service.config).1;
            if doom.is_some() {
                break;
            }
        }
        assert_eq!(doom, Some(SLOW_CONSUMER));
        assert!(conn.backlog() > service.config.client_queue_bytes);
        // The client never read its `101`: it still gets it, then only the close.
        assert!(!conn.end(0, SLOW_CONSUMER, &mut service.market, service.now));
        conn.stream_mut().room = usize::MAX / 2;
        conn.flush().unwrap();
        let out = std::mem::take(&mut conn.stream_mut().written);
        let head = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(out.starts_with(b"HTTP/1.1 101 "), "{out:?}");
        assert_eq!(&out[head..], b"\x88\x0F\x03\xF0slow consumer");
    }
}
