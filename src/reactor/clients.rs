//! The connections: accepting, reading HTTP and WebSocket, answering requests, writing
//! (the fan-out of a tick's frame included), and ending connections.
//!
//! [`Clients`] owns every socket. What happens to one connection during a step is
//! decided first and carried out by [`Clients::end_doomed`] after the step, so that no
//! loop over connections removes one under its own feet.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, warn};
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::config::Config;
use crate::conn::{Conn, Ended, Incoming, OpsOnly, Phase};
use crate::frame::text_frame;
use crate::http::{self, Route};
use crate::market::Market;
use crate::metrics::{Action, DropReason, Metrics};
use crate::protocol::{self, Request, RequestError};
use crate::throttle::Throttle;

/// How long a closing connection may linger before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Pause before accepting again after running out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Frames read from one client before the others get their turn.
pub(crate) const READ_BUDGET: usize = 32;

/// Bytes read from one client before the others get their turn.
pub(crate) const READ_BUDGET_BYTES: usize = 16 * 1024;

/// Connections accepted beyond the limit for `/health` and `/metrics` only, so that an
/// orchestrator's probe is answered truthfully when clients use every slot.
const OPS_RESERVE: usize = 16;

/// How long a connection in the reserve has to send its request.
const OPS_RESERVE_DEADLINE: Duration = Duration::from_secs(2);

/// Largest incoming frame header plus a short request: tungstenite's read buffer size.
const READ_BUFFER_BYTES: usize = 512;

/// tungstenite's settings for a connection whose messages may be `max_message_bytes`.
pub(crate) fn websocket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message_bytes + 1024)
        .max_frame_size(Some(max_message_bytes))
        .max_message_size(Some(max_message_bytes))
}

/// A subscribed client due a ping gets it with its next point; only when no tick has
/// come for this long past the ping interval is it sent on its own.
const PING_WITH_TICK_GRACE: Duration = Duration::from_secs(2);

/// Rate of the accept-failure and slow-consumer warnings.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The test page, embedded in the binary.
const PAGE: &[u8] = include_bytes!("../../static/index.html");

/// An HTTP request whose answer needs the whole service's state, not just the
/// connection's: the reactor builds the body and hands it back through
/// [`Clients::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `GET /health`.
    Health {
        /// The connection that asked.
        key: usize,
        /// A `HEAD` request: headers only.
        head_only: bool,
    },
    /// `GET /metrics`.
    Metrics {
        /// The connection that asked.
        key: usize,
        /// A `HEAD` request: headers only.
        head_only: bool,
    },
}

/// How a connection is to end.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Doom {
    /// Drop the socket now.
    Drop(Option<DropReason>),
    /// Send a close frame (dropping unsent frames if `discard`), then linger.
    Close(CloseCode, &'static str, bool, Option<DropReason>),
}

pub(crate) const SLOW_CONSUMER: Doom = Doom::Close(
    CloseCode::Policy,
    "slow consumer",
    true,
    Some(DropReason::SlowConsumer),
);

/// Every client connection and the listener they come from.
pub struct Clients {
    registry: Registry,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    config: Rc<Config>,
    /// tungstenite's settings for every connection, derived from `config`.
    ws_config: WebSocketConfig,
    /// The encoded `unsubscribed` reply, shared by every client.
    unsubscribed_frame: Bytes,
    /// Connections to end after the current step, with how.
    doomed: Vec<(usize, Doom)>,
    /// Clients that had more input than one turn's budget.
    more_to_read: Vec<usize>,
    accept_paused_until: Option<Instant>,
    accept_log: Throttle,
    slow_log: Throttle,
    /// Most connections open since memory was last given back.
    peak: usize,
    /// Open connections per source address, kept when that is limited.
    per_ip: HashMap<IpAddr, usize>,
    /// The service is stopping: new connections are served `/health` and `/metrics` only.
    stopping: bool,
}

impl Clients {
    /// Takes over `listener`, registered with `registry` under `token`.
    pub fn new(
        registry: Registry,
        mut listener: TcpListener,
        token: Token,
        config: Rc<Config>,
    ) -> io::Result<Clients> {
        registry.register(&mut listener, token, Interest::READABLE)?;
        let ws_config = websocket_config(config.max_message_bytes);
        Ok(Clients {
            registry,
            listener: Some(listener),
            conns: Slab::with_capacity(1024),
            config,
            ws_config,
            unsubscribed_frame: text_frame(protocol::UNSUBSCRIBED_MESSAGE),
            doomed: Vec::new(),
            more_to_read: Vec::new(),
            accept_paused_until: None,
            accept_log: Throttle::new(LOG_EVERY),
            slow_log: Throttle::new(LOG_EVERY),
            peak: 0,
            per_ip: HashMap::new(),
            stopping: false,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Open connections, in any phase.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether some client has input left over from its last turn.
    pub fn more_to_read(&self) -> bool {
        !self.more_to_read.is_empty()
    }

    /// Whether the connection count has fallen to half its peak since the last call
    /// that said so: the moment to give freed memory back to the system. The tables
    /// sized by the peak are shrunk then (the connection table only past its last open
    /// connection, since a connection's key is its token), so that their memory goes
    /// back with the rest.
    pub fn shrink_after_peak(&mut self, market: &mut Market) -> bool {
        if self.peak < 64 || self.conns.len() > self.peak / 2 {
            return false;
        }
        self.peak = self.conns.len();
        self.conns.shrink_to_fit();
        self.doomed.shrink_to_fit();
        self.more_to_read.shrink_to_fit();
        self.per_ip.shrink_to_fit();
        market.shrink_subscribers();
        true
    }

    /// When accepting resumes after running out of file descriptors, if paused.
    pub fn accept_paused_until(&self) -> Option<Instant> {
        self.accept_paused_until
    }

    // ---- accepting ---------------------------------------------------------------

    /// Accepts every pending connection.
    pub fn accept(&mut self, now: Instant, metrics: &mut Metrics) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let (mut stream, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhausted(&e) => {
                    if let Some(suppressed) = self.accept_log.allow(now) {
                        warn!(
                            "cannot accept connections: {e}; pausing accepts briefly \
                             ({suppressed} similar warnings suppressed)"
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => {
                    debug!("accept failed: {e}");
                    continue;
                }
            };
            metrics.connections_total += 1;
            if self.conns.len() >= self.config.max_connections + OPS_RESERVE {
                metrics
                    .clients_dropped_total
                    .add(DropReason::ConnectionLimit);
                let busy = http::error_response(503, "connection limit reached", false);
                // Best effort on a fresh socket; the client is turned away either way.
                let _ = io::Write::write(&mut stream, &busy);
                debug!("refused {addr}: connection limit reached");
                continue;
            }
            let per_ip_limit = self.config.max_connections_per_ip;
            let held = self.per_ip.get(&addr.ip()).copied().unwrap_or(0);
            let ops_only = if self.stopping {
                Some(OpsOnly::Stopping)
            } else if self.conns.len() >= self.config.max_connections {
                Some(OpsOnly::Full)
            } else if per_ip_limit > 0 && held >= per_ip_limit {
                Some(OpsOnly::AddressFull)
            } else {
                None
            };
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.registry.register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register connection from {addr}: {e}");
                continue;
            }
            let deadline = if ops_only.is_some() {
                OPS_RESERVE_DEADLINE.min(self.config.handshake_timeout)
            } else {
                self.config.handshake_timeout
            };
            let mut conn = Conn::new(stream, now, now + deadline);
            conn.ops_only = ops_only;
            if per_ip_limit > 0 && ops_only.is_none() {
                // Counted while it lives: given back in end_doomed.
                *self.per_ip.entry(addr.ip()).or_default() += 1;
                conn.peer = Some(addr.ip());
            }
            entry.insert(conn);
            self.peak = self.peak.max(self.conns.len());
            debug!("connection {key} from {addr}");
        }
    }

    /// Accepts again once the pause after running out of file descriptors is over.
    pub fn resume_accepting(&mut self, now: Instant, metrics: &mut Metrics) {
        if self.accept_paused_until.is_some_and(|at| now >= at) {
            self.accept_paused_until = None;
            self.accept(now, metrics);
        }
    }

    // ---- reading -----------------------------------------------------------------

    /// Reads what a connection sent and answers it; a request for `/health` or
    /// `/metrics` is handed back for the reactor to answer.
    pub fn on_readable(
        &mut self,
        key: usize,
        now: Instant,
        market: &mut Market,
        metrics: &mut Metrics,
    ) -> Option<Asked> {
        let conn = self.conns.get_mut(key)?;
        match &conn.phase {
            Phase::Http { .. } => return self.read_http(key, now, market, metrics),
            Phase::WebSocket(_) => self.read_websocket(key, now, market, metrics),
            Phase::Closing { .. } => {
                if conn.drain_input() {
                    self.doomed.push((key, Doom::Drop(None)));
                }
            }
        }
        None
    }

    fn read_http(
        &mut self,
        key: usize,
        now: Instant,
        market: &mut Market,
        metrics: &mut Metrics,
    ) -> Option<Asked> {
        let conn = self.conns.get_mut(key)?;
        let head = match conn.read_head() {
            Ok(Some(head)) => head,
            Ok(None) => return None,
            Err(None) => {
                self.doomed.push((key, Doom::Drop(None)));
                return None;
            }
            Err(Some(status)) => {
                let text = if status == 431 {
                    "request head too large"
                } else {
                    "malformed HTTP request"
                };
                self.respond(key, http::error_response(status, text, false), now, metrics);
                return None;
            }
        };
        let head_only = head.method == "HEAD";
        let route = match http::route(&head, self.config.enable_ui) {
            route @ (Route::Health | Route::Metrics) => route,
            _ if conn.ops_only.is_some() => {
                let (reason, text) = match conn.ops_only {
                    Some(OpsOnly::AddressFull) => (
                        DropReason::AddressLimit,
                        "connection limit of this address reached",
                    ),
                    Some(OpsOnly::Stopping) => {
                        (DropReason::ConnectionLimit, "the service is shutting down")
                    }
                    _ => (DropReason::ConnectionLimit, "connection limit reached"),
                };
                metrics.clients_dropped_total.add(reason);
                Route::Error(503, text)
            }
            Route::WebSocket(_)
                if !self
                    .config
                    .allowed_origins
                    .allow(head.origin.as_deref(), head.host.as_deref()) =>
            {
                metrics.clients_dropped_total.add(DropReason::OriginRefused);
                debug!("connection {key}: origin {:?} is not allowed", head.origin);
                Route::Error(403, "this origin may not open a WebSocket here")
            }
            route => route,
        };
        let response = match route {
            Route::WebSocket(ws_key) => {
                conn.upgrade(head.len, &ws_key, self.ws_config);
                metrics.websocket_upgrades_total += 1;
                debug!("connection {key} upgraded to WebSocket");
                self.flush(key, metrics);
                self.read_websocket(key, now, market, metrics);
                return None;
            }
            Route::Health => return Some(Asked::Health { key, head_only }),
            Route::Metrics => return Some(Asked::Metrics { key, head_only }),
            Route::Page => http::response(200, "text/html; charset=utf-8", "", PAGE, head_only),
            Route::Error(status, text) => http::error_response(status, text, head_only),
        };
        self.respond(key, response, now, metrics);
        None
    }

    /// Queues a complete HTTP response and closes the connection after it.
    pub fn respond(&mut self, key: usize, response: Vec<u8>, now: Instant, metrics: &mut Metrics) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.socket.outbox.push(Bytes::from(response));
            conn.linger(now + CLOSE_LINGER);
            self.flush(key, metrics);
        }
    }

    /// Reads and answers a client's messages, at most [`READ_BUDGET`] frames per turn;
    /// a client with more waiting is resumed after everyone else's events.
    fn read_websocket(
        &mut self,
        key: usize,
        now: Instant,
        market: &mut Market,
        metrics: &mut Metrics,
    ) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.start_turn(READ_BUDGET_BYTES);
        }
        for _ in 0..READ_BUDGET {
            if self.is_over_limit(key) {
                // Reading on would only queue more replies it does not read: write what
                // the socket takes, and stop here if the queue is still over its limit.
                self.flush(key, metrics);
                if self.is_over_limit(key) {
                    self.doomed.push((key, SLOW_CONSUMER));
                    return;
                }
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.read_message(now) {
                Ok(Some(Incoming::Text(text))) => {
                    let reply = match protocol::parse_request(text.as_str()) {
                        Ok(request) => self.handle_request(key, request, market, metrics),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = reply {
                        self.reply_error(key, &e, metrics);
                    }
                }
                Ok(Some(Incoming::Binary)) => {
                    self.reply_error(key, &protocol::binary_frame_error(), metrics)
                }
                Ok(Some(Incoming::Control)) => {}
                Ok(Some(Incoming::Yield)) => break,
                Ok(None) => return self.flush_read(key, metrics),
                Err(ended) => {
                    self.doomed.push((key, doom_for(key, ended)));
                    return self.flush_read(key, metrics);
                }
            }
        }
        // A budget spent with input left: edge-triggered readiness will not report it
        // again, so remember to come back.
        self.more_to_read.push(key);
        self.flush_read(key, metrics);
    }

    /// Writes the replies to what was read; replies (pongs included) piling up for a
    /// client that does not read them make it a slow consumer.
    fn flush_read(&mut self, key: usize, metrics: &mut Metrics) {
        self.flush(key, metrics);
        if self.is_over_limit(key) {
            self.doomed.push((key, SLOW_CONSUMER));
        }
    }

    /// Whether a client's queue holds more than it may.
    fn is_over_limit(&self, key: usize) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| c.socket.outbox.backlog_bytes() > self.config.client_queue_bytes)
    }

    /// Continues reading clients that used up their budget in the last pass.
    pub fn resume_reads(&mut self, now: Instant, market: &mut Market, metrics: &mut Metrics) {
        let mut keys = std::mem::take(&mut self.more_to_read);
        for key in keys.drain(..) {
            if self.conns.get(key).is_some_and(Conn::is_websocket) {
                self.read_websocket(key, now, market, metrics);
            }
        }
        if self.more_to_read.is_empty() {
            // Keep the allocation for the next pass.
            self.more_to_read = keys;
        }
    }

    // ---- requests ----------------------------------------------------------------

    fn handle_request(
        &mut self,
        key: usize,
        request: Request,
        market: &mut Market,
        metrics: &mut Metrics,
    ) -> Result<(), RequestError> {
        match request {
            Request::Assets => {
                metrics.requests_total.add(Action::Assets);
                self.send(key, market.assets_frame(), metrics);
            }
            Request::Subscribe { asset_id, since } => {
                metrics.requests_total.add(Action::Subscribe);
                let index = market
                    .index_of(asset_id)
                    .ok_or(RequestError::UnknownAsset(asset_id))?;
                self.unsubscribe(key, market);
                let (sub, history) = market.subscribe(key, index, since);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.sub = Some(sub);
                }
                self.send(key, history, metrics);
            }
            Request::Unsubscribe => {
                metrics.requests_total.add(Action::Unsubscribe);
                self.unsubscribe(key, market);
                self.send(key, self.unsubscribed_frame.clone(), metrics);
            }
        }
        Ok(())
    }

    fn reply_error(&mut self, key: usize, error: &RequestError, metrics: &mut Metrics) {
        metrics.request_errors_total.add(error.error_type());
        debug!("connection {key}: {} {error}", error.error_type().as_str());
        self.send(key, text_frame(&protocol::error_message(error)), metrics);
    }

    /// Queues a frame for one client (it is written when the loop flushes it).
    fn send(&mut self, key: usize, frame: Bytes, metrics: &mut Metrics) {
        if let Some(conn) = self.conns.get_mut(key) {
            metrics.messages_sent_total += 1;
            // Checked against the limit once written (see flush_read).
            conn.socket.outbox.push(frame);
        }
    }

    fn unsubscribe(&mut self, key: usize, market: &mut Market) {
        let Some(sub) = self.conns.get_mut(key).and_then(|c| c.sub.take()) else {
            return;
        };
        if let Some(moved) = market.unsubscribe(sub)
            && let Some(other) = self.conns.get_mut(moved)
            && let Some(other_sub) = &mut other.sub
        {
            other_sub.slot = sub.slot;
        }
    }

    // ---- writing -----------------------------------------------------------------

    /// Writes what a connection has queued; a failed socket is dropped.
    pub fn flush(&mut self, key: usize, metrics: &mut Metrics) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.flush() {
            Ok(written) => metrics.bytes_sent_total += written as u64,
            Err(e) => {
                debug!("connection {key}: write failed: {e}");
                self.doomed.push((key, Doom::Drop(None)));
            }
        }
    }

    /// Writes one point frame to every subscriber in `keys`.
    ///
    /// This is the hot loop: one `write` per client, straight from the shared frame when
    /// nothing else is queued. A client due a ping gets it in the same write.
    pub fn fan_out(&mut self, keys: &[usize], frame: &Bytes, metrics: &mut Metrics) {
        let limit = self.config.client_queue_bytes;
        let ping_interval = self.config.ping_interval;
        let now = Instant::now();
        for &key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.ping_sent.is_none() && now.duration_since(conn.last_heard) >= ping_interval {
                conn.ping(now);
            }
            match conn.socket.outbox.send(frame, &mut conn.socket.tcp) {
                Ok(written) => metrics.bytes_sent_total += written as u64,
                Err(_) => {
                    self.doomed.push((key, Doom::Drop(None)));
                    continue;
                }
            }
            if conn.socket.outbox.backlog_bytes() > limit {
                self.doomed.push((key, SLOW_CONSUMER));
            }
        }
        metrics.messages_sent_total += keys.len() as u64;
    }

    // ---- deadlines and endings ---------------------------------------------------

    /// Once a second: pings quiet clients and drops those past a deadline.
    pub fn sweep(&mut self, now: Instant, metrics: &mut Metrics) {
        let config = &self.config;
        for (key, conn) in self.conns.iter_mut() {
            match &conn.phase {
                Phase::Http { deadline, .. } if now >= *deadline => {
                    self.doomed
                        .push((key, Doom::Drop(Some(DropReason::HandshakeTimeout))));
                }
                Phase::Closing { deadline, .. } if now >= *deadline => {
                    self.doomed.push((key, Doom::Drop(None)));
                }
                Phase::WebSocket(_) => match conn.ping_sent {
                    Some(sent) if now.duration_since(sent) >= config.pong_timeout => {
                        self.doomed
                            .push((key, Doom::Drop(Some(DropReason::PongTimeout))));
                    }
                    // Subscribers get their ping with the next point (see fan_out), which
                    // saves a write; this catches them when the feed is quiet.
                    None if now.duration_since(conn.last_heard)
                        >= config.ping_interval
                            + if conn.sub.is_some() {
                                PING_WITH_TICK_GRACE
                            } else {
                                Duration::ZERO
                            } =>
                    {
                        conn.ping(now);
                        match conn.flush() {
                            Ok(n) => metrics.bytes_sent_total += n as u64,
                            Err(_) => self.doomed.push((key, Doom::Drop(None))),
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }

    /// Starts the shutdown: every WebSocket client is closed with 1001, and from now on
    /// connections are served `/health` (which then answers 503) and `/metrics` only, so
    /// a load balancer sees the instance go down rather than vanish.
    pub fn close_all(&mut self) {
        self.stopping = true;
        for (key, conn) in self.conns.iter_mut() {
            match conn.phase {
                Phase::WebSocket(_) => self.doomed.push((
                    key,
                    Doom::Close(CloseCode::Away, "server shutting down", false, None),
                )),
                Phase::Http { .. } => conn.ops_only = Some(OpsOnly::Stopping),
                Phase::Closing { .. } => {}
            }
        }
    }

    /// Whether only probes (`/health`, `/metrics`) are left: the shutdown may end.
    pub fn only_probes_left(&self) -> bool {
        self.conns.iter().all(|(_, conn)| conn.ops_only.is_some())
    }

    /// Carries out what was decided about connections during the last step.
    pub fn end_doomed(&mut self, now: Instant, market: &mut Market, metrics: &mut Metrics) {
        while let Some((key, doom)) = self.doomed.pop() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match doom {
                Doom::Close(code, reason, discard, why) => {
                    if matches!(conn.phase, Phase::Closing { .. }) {
                        continue;
                    }
                    conn.close(code, reason, discard, now + CLOSE_LINGER);
                    if let Some(why) = why {
                        metrics.clients_dropped_total.add(why);
                        if why == DropReason::SlowConsumer
                            && let Some(suppressed) = self.slow_log.allow(now)
                        {
                            warn!(
                                "connection {key} closed as a slow consumer \
                                 ({suppressed} more since the last report)"
                            );
                        }
                    }
                    self.unsubscribe(key, market);
                    self.flush(key, metrics);
                }
                Doom::Drop(why) => {
                    if let Some(why) = why {
                        metrics.clients_dropped_total.add(why);
                    }
                    self.unsubscribe(key, market);
                    let mut conn = self.conns.remove(key);
                    let _ = self.registry.deregister(&mut conn.socket.tcp);
                    if let Some(ip) = conn.peer
                        && let Some(held) = self.per_ip.get_mut(&ip)
                    {
                        *held -= 1;
                        if *held == 0 {
                            self.per_ip.remove(&ip);
                        }
                    }
                    debug!("connection {key} closed");
                }
            }
        }
    }
}

pub(crate) fn doom_for(key: usize, ended: Ended) -> Doom {
    match ended {
        Ended::Closed => Doom::Drop(None),
        Ended::TooLarge => {
            debug!("connection {key}: message over the size limit");
            Doom::Close(
                CloseCode::Size,
                "message too large",
                false,
                Some(DropReason::MessageTooLarge),
            )
        }
        Ended::Protocol(why) => {
            debug!("connection {key}: protocol error: {why}");
            Doom::Close(
                CloseCode::Protocol,
                "protocol error",
                false,
                Some(DropReason::ProtocolError),
            )
        }
        Ended::TooManyFragments => {
            debug!("connection {key}: too many fragments in one message");
            Doom::Close(
                CloseCode::Size,
                "too many fragments",
                false,
                Some(DropReason::MessageTooLarge),
            )
        }
        Ended::InvalidText => Doom::Close(
            CloseCode::Invalid,
            "text is not UTF-8",
            false,
            Some(DropReason::ProtocolError),
        ),
        Ended::Io(e) => {
            debug!("connection {key}: {e}");
            Doom::Drop(None)
        }
    }
}

fn is_resource_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
