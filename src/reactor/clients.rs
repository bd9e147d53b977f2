//! The connection table: accepting, the limits and the reserve kept for probes, handing
//! each connection's events to its driver ([`Conn`]), the fan-out of a tick's frame, the
//! once-a-second sweep, and ending connections.
//!
//! [`Clients`] owns every socket. What happens to one connection during a step is
//! decided first and carried out by [`Clients::end_doomed`] after the step, so that no
//! loop over connections (or over an asset's subscribers) removes one under its feet.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, warn};
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::config::Config;
use crate::conn::{Conn, Context, Doom, OpsOnly, Probe, Shared, Step};
use crate::http;
use crate::market::Market;
use crate::metrics::{DropReason, Encoding, Metrics};
use crate::throttle::Throttle;
use crate::tls::Acceptor;

use super::transport::Transport;

/// Pause before accepting again after running out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connections accepted beyond the limit for `/health` and `/metrics` only, so that an
/// orchestrator's probe is answered truthfully when clients use every slot.
const OPS_RESERVE: usize = 16;

/// How long a connection in the reserve has to send its request.
const OPS_RESERVE_DEADLINE: Duration = Duration::from_secs(2);

/// Rate of the accept-failure and slow-consumer warnings.
const LOG_EVERY: Duration = Duration::from_secs(60);

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

/// Every client connection and the listener they come from.
pub struct Clients {
    registry: Registry,
    listener: Option<TcpListener>,
    conns: Slab<Conn<Transport>>,
    config: Rc<Config>,
    /// With TLS: the configuration every accepted socket starts its handshake with.
    tls: Option<Acceptor>,
    /// The buffers every connection's steps borrow.
    shared: Shared,
    /// Connections to end after the current step, with how.
    doomed: Vec<(usize, Doom)>,
    /// Clients that had more input than one turn's budget.
    more_to_read: Vec<usize>,
    /// Connections in the reserve, oldest first, with the accept count that tells a
    /// key's connection from a later one in the same slot.
    reserve: VecDeque<(usize, u64)>,
    /// Each open connection's accept count, by key (see `reserve`).
    serials: Vec<u64>,
    /// The reserve queue's length after it was last rid of connections that are gone.
    reserve_pruned_at: usize,
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
    /// Takes over `listener`, registered with `registry` under `token`; with `tls`,
    /// every connection speaks TLS.
    pub fn new(
        registry: Registry,
        mut listener: TcpListener,
        token: Token,
        config: Rc<Config>,
        tls: Option<Acceptor>,
    ) -> io::Result<Clients> {
        registry.register(&mut listener, token, Interest::READABLE)?;
        let shared = Shared::new(&config);
        Ok(Clients {
            registry,
            listener: Some(listener),
            conns: Slab::with_capacity(1024),
            config,
            tls,
            shared,
            doomed: Vec::new(),
            more_to_read: Vec::new(),
            reserve: VecDeque::new(),
            serials: Vec::new(),
            reserve_pruned_at: 0,
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

    /// The TLS configuration new connections get, if TLS is on (for its renewal).
    pub fn tls_mut(&mut self) -> Option<&mut Acceptor> {
        self.tls.as_mut()
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
        self.serials.truncate(self.conns.capacity());
        self.serials.shrink_to_fit();
        self.doomed.shrink_to_fit();
        self.more_to_read.shrink_to_fit();
        self.reserve.shrink_to_fit();
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
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
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
            if self.conns.len() >= self.config.max_connections + OPS_RESERVE
                && !self.make_room_in_reserve(metrics)
            {
                metrics
                    .clients_dropped_total
                    .add(DropReason::ConnectionLimit);
                if self.tls.is_none() {
                    let busy = http::error_response(503, "connection limit reached", false);
                    // Best effort on a fresh socket; the client is turned away either way.
                    // (A TLS client could not read it before a handshake: it is just closed.)
                    let _ = io::Write::write(&mut stream, &busy);
                }
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
            let transport = match &self.tls {
                None => Transport::Plain(stream),
                Some(acceptor) => match acceptor.accept(stream) {
                    Ok(tls) => Transport::Tls(Box::new(tls)),
                    Err(e) => {
                        warn!("cannot start TLS for the connection from {addr}: {e}");
                        continue;
                    }
                },
            };
            // The handshake deadline runs from here, so it bounds a TLS handshake too.
            let mut conn = Conn::new(transport, now, now + deadline);
            conn.ops_only = ops_only;
            if per_ip_limit > 0 && ops_only.is_none() {
                // Counted while it lives: given back when it is removed.
                *self.per_ip.entry(addr.ip()).or_default() += 1;
                conn.peer = Some(addr.ip());
            }
            entry.insert(conn);
            let serial = metrics.connections_total;
            if self.serials.len() <= key {
                self.serials.resize(key + 1, 0);
            }
            self.serials[key] = serial;
            if ops_only.is_some() {
                self.remember_in_reserve(key, serial);
            }
            self.peak = self.peak.max(self.conns.len());
            debug!("connection {key} from {addr}");
        }
    }

    /// With every slot and the reserve taken, drops the oldest reserve connection that
    /// has not asked for anything yet, so a probe arriving in a storm of connections that
    /// send nothing is still answered. Returns whether room was made.
    fn make_room_in_reserve(&mut self, metrics: &mut Metrics) -> bool {
        while let Some((key, serial)) = self.reserve.pop_front() {
            let current = self.serials.get(key) == Some(&serial);
            let Some(conn) = self.conns.get(key).filter(|_| current) else {
                continue;
            };
            if conn.is_waiting_for_head() {
                debug!("connection {key} leaves the reserve for a newer one");
                metrics
                    .clients_dropped_total
                    .add(DropReason::ConnectionLimit);
                self.remove(key, metrics);
                return true;
            }
        }
        false
    }

    /// Adds a reserve connection to the queue of candidates for making room, first
    /// forgetting those that are gone once the queue has doubled since the last time.
    fn remember_in_reserve(&mut self, key: usize, serial: u64) {
        if self.reserve.len() >= self.reserve_pruned_at.max(2 * OPS_RESERVE) * 2 {
            let (conns, serials) = (&self.conns, &self.serials);
            self.reserve.retain(|&(key, serial)| {
                serials.get(key) == Some(&serial)
                    && conns.get(key).is_some_and(Conn::is_waiting_for_head)
            });
            self.reserve_pruned_at = self.reserve.len();
        }
        self.reserve.push_back((key, serial));
    }

    /// Accepts again once the pause after running out of file descriptors is over.
    pub fn resume_accepting(&mut self, now: Instant, metrics: &mut Metrics) {
        if self.accept_paused_until.is_some_and(|at| now >= at) {
            self.accept_paused_until = None;
            self.accept(now, metrics);
        }
    }

    // ---- the connections' own steps ---------------------------------------------

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
        let mut cx = Context {
            config: &self.config,
            market,
            metrics,
            shared: &mut self.shared,
            now,
        };
        let step = conn.on_readable(key, &mut cx);
        self.after(key, step)
    }

    /// What the reactor does after a connection's step.
    fn after(&mut self, key: usize, step: Step) -> Option<Asked> {
        if let Some(doom) = step.doom {
            self.doomed.push((key, doom));
        }
        if step.more_to_read {
            self.more_to_read.push(key);
        }
        step.probe.map(|(probe, head_only)| match probe {
            Probe::Health => Asked::Health { key, head_only },
            Probe::Metrics => Asked::Metrics { key, head_only },
        })
    }

    /// Continues reading clients that used up their budget in the last pass.
    pub fn resume_reads(&mut self, now: Instant, market: &mut Market, metrics: &mut Metrics) {
        let mut keys = std::mem::take(&mut self.more_to_read);
        for key in keys.drain(..) {
            if self.conns.get(key).is_some_and(Conn::is_websocket) {
                self.on_readable(key, now, market, metrics);
            }
        }
        if self.more_to_read.is_empty() {
            // Keep the allocation for the next pass.
            self.more_to_read = keys;
        }
    }

    /// Queues a complete HTTP response (a probe's answer) and closes the connection
    /// after it.
    pub fn respond(&mut self, key: usize, response: Vec<u8>, now: Instant, metrics: &mut Metrics) {
        if let Some(conn) = self.conns.get_mut(key) {
            let step = conn.respond(key, response, now, metrics);
            self.after(key, step);
        }
    }

    /// Writes what a connection has queued (its socket became writable).
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
        let now = Instant::now();
        for &key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let (written, doom) = conn.send_point(frame, now, &self.config);
            metrics.bytes_sent_total += written as u64;
            if let Some(doom) = doom {
                self.doomed.push((key, doom));
            }
        }
        metrics.messages_sent_total += keys.len() as u64;
        metrics
            .message_bytes_total
            .add_many(Encoding::of(frame), (frame.len() * keys.len()) as u64);
    }

    // ---- deadlines and endings ---------------------------------------------------

    /// Once a second: pings quiet clients and drops those past a deadline.
    pub fn sweep(&mut self, now: Instant, market: &Market, metrics: &mut Metrics) {
        for (key, conn) in self.conns.iter_mut() {
            let (written, doom) = conn.sweep(now, &self.config, market.is_subscribed(key));
            metrics.bytes_sent_total += written as u64;
            if let Some(doom) = doom {
                self.doomed.push((key, doom));
            }
        }
    }

    /// Starts the shutdown: every WebSocket client is closed with 1001, and from now on
    /// connections are served `/health` (which then answers 503) and `/metrics` only, so
    /// a load balancer sees the instance go down rather than vanish.
    pub fn close_all(&mut self) {
        self.stopping = true;
        for (key, conn) in self.conns.iter_mut() {
            if let Some(doom) = conn.stop() {
                self.doomed.push((key, doom));
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
            let why = match doom {
                Doom::Drop(why) | Doom::Close(_, _, _, why) => why,
            };
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
            if conn.end(key, doom, market, now) {
                self.remove(key, metrics);
            }
        }
    }

    /// Takes a connection out of the table and the poller (its subscription, if any,
    /// has been ended).
    fn remove(&mut self, key: usize, metrics: &mut Metrics) {
        let mut conn = self.conns.remove(key);
        if conn.deflate() {
            metrics.deflate_connections -= 1;
        }
        let _ = self.registry.deregister(conn.stream_mut().tcp_mut());
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

fn is_resource_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
