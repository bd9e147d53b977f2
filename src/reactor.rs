//! The event loop: one thread owns the listener, every connection, the tick clock and
//! all in-memory state. Nothing here blocks; feed and store calls go to the workers.
//!
//! Each second on the wall clock the loop starts a feed fetch for that second. When its
//! result comes back the points are recorded in the market, each point's frame is
//! encoded once and queued to every subscriber of its asset, and the points are queued
//! for the store.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use log::{debug, error, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::config::Config;
use crate::conn::{Conn, Ended, Incoming, Phase};
use crate::feed::{Feed, FeedError, Fetched};
use crate::frame::text_frame;
use crate::http::{self, Route};
use crate::market::{Asset, Market, Point};
use crate::metrics::{DropReason, Gauges, Metrics, TickOutcome};
use crate::protocol::{self, Request, RequestError};
use crate::store::{Store, StoreError};
use crate::throttle::Throttle;
use crate::workers::Workers;
use crate::writebehind::WriteBehind;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// How long a closing connection may linger before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// How long shutdown waits for clients to close and queued points to be written.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// Pause before accepting again after running out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Rate of repeated warnings (feed failures, store failures, accept errors).
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Events handled between looks at the clock and the workers' results, so that the
/// ticks keep their second while thousands of clients subscribe at once.
const EVENTS_BETWEEN_CLOCK_CHECKS: usize = 32;
/// Frames read from one client before the others get their turn.
const READ_BUDGET: usize = 32;
/// A subscribed client due a ping gets it with its next point; only when no tick has
/// come for this long past the ping interval is it sent on its own.
const PING_WITH_TICK_GRACE: Duration = Duration::from_secs(2);
/// Largest incoming frame header plus a short request: tungstenite's read buffer size.
const READ_BUFFER_BYTES: usize = 512;

/// The test page, embedded in the binary.
pub const PAGE: &[u8] = include_bytes!("../static/index.html");

/// A finished worker job.
pub enum Done {
    /// A feed fetch for the tick at `time`.
    Feed {
        /// The tick's epoch second.
        time: i64,
        /// How long the fetch took.
        took: Duration,
        /// What it produced.
        result: Result<Fetched, FeedError>,
    },
    /// A batch written to the store (or not).
    Write {
        /// The batch, handed back so a failure can retry it.
        batch: Vec<Point>,
        /// How long the write took.
        took: Duration,
        /// Whether it worked.
        result: Result<(), StoreError>,
    },
    /// One retention pass.
    Retention(Result<u64, StoreError>),
}

/// Settings the loop reads on every connection.
struct Limits {
    ws: WebSocketConfig,
    ui: bool,
    max_connections: usize,
    client_queue_bytes: usize,
    ping_interval: Duration,
    pong_timeout: Duration,
    handshake_timeout: Duration,
    max_in_flight: usize,
    retention: Option<Duration>,
    health_max_tick_age: Duration,
}

/// What the reactor is built from; assembled at start-up by `service`.
pub struct Parts {
    /// Validated configuration.
    pub config: Config,
    /// The bound listener.
    pub listener: TcpListener,
    /// Assets with warmed rings.
    pub market: Market,
    /// Where quotes come from.
    pub feed: Arc<dyn Feed>,
    /// Where points go.
    pub store: Arc<dyn Store>,
    /// Points to write before the first tick (e.g. a backfill).
    pub initial_writes: Vec<Point>,
    /// Points deleted after this many days; `None` keeps them.
    pub retention: Option<Duration>,
}

/// The event loop and everything it owns.
pub struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    conns: Slab<Conn>,
    market: Market,
    assets: Arc<[Asset]>,
    workers: Workers<Done>,
    feed: Arc<dyn Feed>,
    store: Arc<dyn Store>,
    limits: Limits,
    metrics: Metrics,
    started: Instant,
    /// The last second a tick was started for.
    last_second: i64,
    /// The newest second that recorded a point.
    last_point_time: i64,
    feeds_in_flight: usize,
    writes: WriteBehind,
    store_up: bool,
    retention_running: bool,
    next_retention: Instant,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Connections to end after the current pass, with how.
    doomed: Vec<(usize, Doom)>,
    /// Clients that had more input than one turn's budget.
    more_to_read: Vec<usize>,
    /// A feed failure was logged and no answer has come since.
    feed_failing: bool,
    feed_log: Throttle,
    store_log: Throttle,
    /// A store failure was logged and no write has succeeded since.
    store_failure_logged: bool,
    drop_log: Throttle,
    accept_log: Throttle,
}

/// How a connection is to end.
#[derive(Debug, Clone, Copy)]
enum Doom {
    /// Drop the socket now.
    Drop(Option<DropReason>),
    /// Send a close frame (dropping unsent frames if `discard`), then linger.
    Close(CloseCode, &'static str, bool, Option<DropReason>),
}

impl Reactor {
    /// Builds the loop around a bound listener; workers and signal handlers start here.
    pub fn new(parts: Parts) -> io::Result<Reactor> {
        let Parts {
            config,
            mut listener,
            market,
            feed,
            store,
            initial_writes,
            retention,
        } = parts;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let workers = Workers::start(config.worker_threads, waker)?;
        let ws = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_write_buffer_size(config.max_message_bytes + 1024)
            .max_frame_size(Some(config.max_message_bytes))
            .max_message_size(Some(config.max_message_bytes));
        let assets: Arc<[Asset]> = market.assets().iter().map(|a| a.asset.clone()).collect();
        let mut writes = WriteBehind::new(config.write_queue_points);
        writes.push(&initial_writes);
        let now = Instant::now();
        Ok(Reactor {
            poll,
            listener: Some(listener),
            signals,
            conns: Slab::with_capacity(1024),
            market,
            assets,
            workers,
            feed,
            store,
            limits: Limits {
                ws,
                ui: config.enable_ui,
                max_connections: config.max_connections,
                client_queue_bytes: config.client_queue_bytes,
                ping_interval: config.ping_interval,
                pong_timeout: config.pong_timeout,
                handshake_timeout: config.handshake_timeout,
                max_in_flight: config.rates_max_in_flight,
                retention,
                health_max_tick_age: config.health_max_tick_age,
            },
            metrics: Metrics::default(),
            started: now,
            last_second: 0,
            last_point_time: 0,
            feeds_in_flight: 0,
            writes,
            store_up: true,
            retention_running: false,
            next_retention: now + Duration::from_secs(3),
            accept_paused_until: None,
            shutdown_deadline: None,
            doomed: Vec::new(),
            more_to_read: Vec::new(),
            feed_failing: false,
            feed_log: Throttle::new(LOG_EVERY),
            store_log: Throttle::new(LOG_EVERY),
            store_failure_logged: false,
            drop_log: Throttle::new(LOG_EVERY),
            accept_log: Throttle::new(LOG_EVERY),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Runs until a signal has stopped the service and its clean-up is done.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.last_second = epoch_now().as_secs() as i64;
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut now = Instant::now();
            for (n, event) in events.iter().enumerate() {
                if n > 0 && n % EVENTS_BETWEEN_CLOCK_CHECKS == 0 {
                    // A long pass (a subscribe storm) must not hold up a tick.
                    now = Instant::now();
                    self.take_results(now);
                    self.on_clock(now);
                }
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    SIGNALS => self.on_signal(now),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key, now);
                        }
                        if event.is_writable() {
                            self.flush(key);
                        }
                    }
                }
                self.end_doomed(now);
            }
            self.resume_reads(now);
            self.end_doomed(now);
            self.take_results(now);
            self.on_clock(now);
            self.end_doomed(now);
            if self.shutdown_finished(now) {
                break;
            }
        }
        let leftover = self.writes.len();
        if leftover > 0 {
            error!("exiting with {leftover} points not written to the store");
        }
        info!("stopped");
        Ok(())
    }

    /// Time until the next wall-clock second (or sooner, to resume accepting).
    fn poll_timeout(&self) -> Duration {
        let now = epoch_now();
        let mut timeout = Duration::from_secs(now.as_secs() + 1).saturating_sub(now);
        if let Some(at) = self.accept_paused_until {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        if self.shutdown_deadline.is_some() {
            timeout = timeout.min(Duration::from_millis(50));
        }
        if !self.more_to_read.is_empty() {
            timeout = Duration::ZERO;
        }
        timeout
    }

    // ---- connections -------------------------------------------------------------

    fn accept(&mut self, now: Instant) {
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
            self.metrics.connections_total += 1;
            if self.conns.len() >= self.limits.max_connections {
                self.metrics.client_dropped(DropReason::ConnectionLimit);
                let busy = http::error_response(503, "connection limit reached", false);
                // Best effort on a fresh socket; the client is turned away either way.
                let _ = io::Write::write(&mut stream, &busy);
                debug!("refused {addr}: connection limit reached");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register connection from {addr}: {e}");
                continue;
            }
            entry.insert(Conn::new(stream, now, now + self.limits.handshake_timeout));
            debug!("connection {key} from {addr}");
        }
    }

    fn on_readable(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match &conn.phase {
            Phase::Http { .. } => self.read_http(key, now),
            Phase::WebSocket(_) => self.read_websocket(key, now),
            Phase::Closing { .. } => {
                if conn.drain_input() {
                    self.doomed.push((key, Doom::Drop(None)));
                }
            }
        }
    }

    fn read_http(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let head = match conn.read_head() {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(None) => {
                self.doomed.push((key, Doom::Drop(None)));
                return;
            }
            Err(Some(status)) => {
                let text = if status == 431 {
                    "request head too large"
                } else {
                    "malformed HTTP request"
                };
                self.respond(key, http::error_response(status, text, false), now);
                return;
            }
        };
        let head_only = head.method == "HEAD";
        let response = match http::route(&head, self.limits.ui) {
            Route::WebSocket(ws_key) => {
                conn.upgrade(head.len, &ws_key, self.limits.ws);
                self.metrics.websocket_upgrades_total += 1;
                debug!("connection {key} upgraded to WebSocket");
                self.flush(key);
                self.read_websocket(key, now);
                return;
            }
            Route::Page => http::response(200, "text/html; charset=utf-8", "", PAGE, head_only),
            Route::Health => {
                let (status, body) = self.health_body(now);
                http::response(status, "application/json", "", body.as_bytes(), head_only)
            }
            Route::Metrics => {
                let body = self.metrics.render(&self.gauges(now));
                http::response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    "",
                    body.as_bytes(),
                    head_only,
                )
            }
            Route::Error(status, text) => http::error_response(status, text, head_only),
        };
        self.respond(key, response, now);
    }

    /// Queues a complete HTTP response and closes the connection after it.
    fn respond(&mut self, key: usize, response: Vec<u8>, now: Instant) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.socket.outbox.push(Bytes::from(response));
            conn.linger(now + CLOSE_LINGER);
            self.flush(key);
        }
    }

    /// Reads and answers a client's messages, at most [`READ_BUDGET`] frames per turn;
    /// a client with more waiting is resumed after everyone else's events.
    fn read_websocket(&mut self, key: usize, now: Instant) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.read_message(now) {
                Ok(Some(Incoming::Text(text))) => {
                    let reply = match protocol::parse_request(text.as_str()) {
                        Ok(request) => self.handle_request(key, request),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = reply {
                        self.reply_error(key, &e);
                    }
                }
                Ok(Some(Incoming::Binary)) => {
                    self.reply_error(key, &protocol::binary_frame_error())
                }
                Ok(Some(Incoming::Control)) => {}
                Ok(None) => return self.flush_read(key),
                Err(ended) => {
                    self.doomed.push((key, doom_for(key, ended)));
                    return self.flush_read(key);
                }
            }
        }
        // Budget spent with input left: edge-triggered readiness will not report it
        // again, so remember to come back.
        self.more_to_read.push(key);
        self.flush_read(key);
    }

    /// Writes the replies to what was read; replies (pongs included) piling up for a
    /// client that does not read them make it a slow consumer.
    fn flush_read(&mut self, key: usize) {
        self.flush(key);
        if let Some(conn) = self.conns.get(key)
            && conn.socket.outbox.backlog_bytes() > self.limits.client_queue_bytes
        {
            self.doomed.push((key, SLOW_CONSUMER));
        }
    }

    /// Continues reading clients that used up their budget in the last pass.
    fn resume_reads(&mut self, now: Instant) {
        let mut keys = std::mem::take(&mut self.more_to_read);
        for key in keys.drain(..) {
            if self.conns.get(key).is_some_and(Conn::is_websocket) {
                self.read_websocket(key, now);
            }
        }
        if self.more_to_read.is_empty() {
            // Keep the allocation for the next pass.
            self.more_to_read = keys;
        }
    }

    fn handle_request(&mut self, key: usize, request: Request) -> Result<(), RequestError> {
        match request {
            Request::Assets => {
                self.metrics.requests_total[0] += 1;
                let frame = self.market.assets_frame();
                self.send(key, frame);
            }
            Request::Subscribe { asset_id } => {
                self.metrics.requests_total[1] += 1;
                let index = self
                    .market
                    .index_of(asset_id)
                    .ok_or(RequestError::UnknownAsset(asset_id))?;
                self.unsubscribe(key);
                let (sub, history) = self.market.subscribe(key, index);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.sub = Some(sub);
                }
                self.send(key, history);
            }
            Request::Unsubscribe => {
                self.metrics.requests_total[2] += 1;
                self.unsubscribe(key);
                self.send(key, Bytes::from_static(UNSUBSCRIBED_FRAME));
            }
        }
        Ok(())
    }

    fn reply_error(&mut self, key: usize, error: &RequestError) {
        self.metrics.request_error(error.error_type());
        debug!("connection {key}: {} {error}", error.error_type());
        self.send(key, text_frame(&protocol::error_message(error)));
    }

    /// Queues a frame for one client (it is written when the loop flushes it).
    fn send(&mut self, key: usize, frame: Bytes) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.metrics.messages_sent_total += 1;
            // Checked against the limit once written (see flush_read).
            conn.socket.outbox.push(frame);
        }
    }

    fn unsubscribe(&mut self, key: usize) {
        let Some(sub) = self.conns.get_mut(key).and_then(|c| c.sub.take()) else {
            return;
        };
        if let Some(moved) = self.market.unsubscribe(sub)
            && let Some(other) = self.conns.get_mut(moved)
            && let Some(other_sub) = &mut other.sub
        {
            other_sub.slot = sub.slot;
        }
    }

    /// Writes what a connection has queued; a failed socket is dropped.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.flush() {
            Ok(written) => self.metrics.bytes_sent_total += written as u64,
            Err(e) => {
                debug!("connection {key}: write failed: {e}");
                self.doomed.push((key, Doom::Drop(None)));
            }
        }
    }

    /// Carries out what was decided about connections during the last step.
    fn end_doomed(&mut self, now: Instant) {
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
                        self.metrics.client_dropped(why);
                        if why == DropReason::SlowConsumer {
                            warn!("connection {key} closed as a slow consumer");
                        }
                    }
                    self.unsubscribe(key);
                    self.flush(key);
                }
                Doom::Drop(why) => {
                    if let Some(why) = why {
                        self.metrics.client_dropped(why);
                    }
                    self.unsubscribe(key);
                    let mut conn = self.conns.remove(key);
                    let _ = self.poll.registry().deregister(&mut conn.socket.tcp);
                    debug!("connection {key} closed");
                }
            }
        }
    }

    // ---- the clock ---------------------------------------------------------------

    /// Runs once per loop pass; does the per-second work when a new second has begun.
    fn on_clock(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|at| now >= at) {
            self.accept_paused_until = None;
            self.accept(now);
        }
        self.start_store_jobs(now);
        let second = epoch_now().as_secs() as i64;
        if second <= self.last_second {
            return;
        }
        if second > self.last_second + 1 {
            debug!(
                "clock jumped {} s; ticks in between are skipped",
                second - self.last_second - 1
            );
        }
        self.last_second = second;
        self.market.trim(second);
        if self.shutdown_deadline.is_none() {
            self.start_fetch(second);
        }
        self.sweep(now);
    }

    fn start_fetch(&mut self, second: i64) {
        if self.feeds_in_flight >= self.limits.max_in_flight {
            self.metrics.tick(TickOutcome::Skipped);
            debug!(
                "tick {second} skipped: {} fetches in flight",
                self.feeds_in_flight
            );
            return;
        }
        self.feeds_in_flight += 1;
        let feed = Arc::clone(&self.feed);
        let assets = Arc::clone(&self.assets);
        self.workers.submit(
            move || {
                let started = Instant::now();
                let result = feed.fetch(second, &assets);
                Done::Feed {
                    time: second,
                    took: started.elapsed(),
                    result,
                }
            },
            Done::Feed {
                time: second,
                took: Duration::ZERO,
                result: Err(FeedError::Connect("the fetch panicked".into())),
            },
        );
    }

    /// Pings quiet clients and drops those past a deadline.
    fn sweep(&mut self, now: Instant) {
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
                    Some(sent) if now.duration_since(sent) >= self.limits.pong_timeout => {
                        self.doomed
                            .push((key, Doom::Drop(Some(DropReason::PongTimeout))));
                    }
                    // Subscribers get their ping with the next point (see fan_out), which
                    // saves a write; this catches them when the feed is quiet.
                    None if now.duration_since(conn.last_heard)
                        >= self.limits.ping_interval
                            + if conn.sub.is_some() {
                                PING_WITH_TICK_GRACE
                            } else {
                                Duration::ZERO
                            } =>
                    {
                        conn.ping(now);
                        match conn.flush() {
                            Ok(n) => self.metrics.bytes_sent_total += n as u64,
                            Err(_) => self.doomed.push((key, Doom::Drop(None))),
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }

    // ---- worker results ----------------------------------------------------------

    fn take_results(&mut self, now: Instant) {
        while let Some(done) = self.workers.try_recv() {
            match done {
                Done::Feed { time, took, result } => self.on_fetched(time, took, result, now),
                Done::Write {
                    batch,
                    took,
                    result,
                } => self.on_written(batch, took, result, now),
                Done::Retention(result) => self.on_retention(result, now),
            }
        }
    }

    fn on_fetched(
        &mut self,
        time: i64,
        took: Duration,
        result: Result<Fetched, FeedError>,
        now: Instant,
    ) {
        self.feeds_in_flight = self.feeds_in_flight.saturating_sub(1);
        self.metrics.feed_fetch_seconds.observe(took);
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(e) => {
                self.metrics.tick(TickOutcome::Failed);
                self.metrics.feed_error(feed_error_kind(&e));
                if let Some(suppressed) = self.feed_log.allow(now) {
                    // Only a reported failure gets its recovery reported.
                    self.feed_failing = true;
                    warn!(
                        "tick {time}: no points: {e} ({suppressed} similar failures since the last report)"
                    );
                }
                return;
            }
        };
        // The throttle is not reset here: a feed failing every few seconds would
        // otherwise log a warning and a recovery line for each failure.
        if self.feed_failing {
            self.feed_failing = false;
            info!("tick {time}: feed answering again");
        }
        self.metrics.feed_entries_rejected_total += u64::from(fetched.rejected);
        if time <= self.last_point_time {
            self.metrics.tick(TickOutcome::Late);
            debug!("tick {time}: result arrived after a newer tick; dropped");
            return;
        }
        let delay = epoch_now().saturating_sub(Duration::from_secs(time.max(0) as u64));
        self.metrics.tick_delay_seconds.observe(delay);
        let fanout_started = Instant::now();
        let mut points = Vec::with_capacity(fetched.quotes.len());
        for quote in fetched.quotes {
            let point = Point {
                asset_id: quote.asset_id,
                time,
                value: quote.value,
            };
            if let Some((index, frame)) = self.market.record(point) {
                points.push(point);
                self.fan_out(index, &frame);
            }
        }
        if points.is_empty() {
            self.metrics.tick(TickOutcome::Empty);
            return;
        }
        self.metrics
            .fanout_seconds
            .observe(fanout_started.elapsed());
        self.metrics.tick(TickOutcome::Ok);
        self.metrics.points_total += points.len() as u64;
        self.last_point_time = time;
        let dropped = self.writes.push(&points);
        self.count_dropped(dropped, now);
        self.start_store_jobs(now);
    }

    /// Queues one point frame to every subscriber of an asset and writes it out.
    ///
    /// This is the hot loop: one `write` per client, straight from the shared frame when
    /// nothing else is queued. A client due a ping gets it in the same write.
    fn fan_out(&mut self, index: usize, frame: &Bytes) {
        let limit = self.limits.client_queue_bytes;
        let ping_interval = self.limits.ping_interval;
        let now = Instant::now();
        for &key in self.market.subscribers(index) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.ping_sent.is_none() && now.duration_since(conn.last_heard) >= ping_interval {
                conn.ping(now);
            }
            match conn.socket.outbox.send(frame, &mut conn.socket.tcp) {
                Ok(written) => self.metrics.bytes_sent_total += written as u64,
                Err(_) => {
                    self.doomed.push((key, Doom::Drop(None)));
                    continue;
                }
            }
            if conn.socket.outbox.backlog_bytes() > limit {
                self.doomed.push((key, SLOW_CONSUMER));
            }
        }
        self.metrics.messages_sent_total += self.market.subscribers(index).len() as u64;
    }

    // ---- the store ---------------------------------------------------------------

    fn start_store_jobs(&mut self, now: Instant) {
        if let Some(batch) = self.writes.next_batch(now) {
            let store = Arc::clone(&self.store);
            let if_panicked = batch.clone();
            self.workers.submit(
                move || {
                    let started = Instant::now();
                    let result = store.write_points(&batch);
                    Done::Write {
                        batch,
                        took: started.elapsed(),
                        result,
                    }
                },
                Done::Write {
                    batch: if_panicked,
                    took: Duration::ZERO,
                    result: Err(StoreError::Query("the write panicked".into())),
                },
            );
        }
        let Some(keep) = self.limits.retention else {
            return;
        };
        if self.retention_running || now < self.next_retention || self.shutdown_deadline.is_some() {
            return;
        }
        self.retention_running = true;
        let before = epoch_now().as_secs() as i64 - keep.as_secs() as i64;
        let store = Arc::clone(&self.store);
        self.workers.submit(
            move || Done::Retention(store.delete_points_before(before, RETENTION_BATCH)),
            Done::Retention(Err(StoreError::Query("retention panicked".into()))),
        );
    }

    fn on_written(
        &mut self,
        batch: Vec<Point>,
        took: Duration,
        result: Result<(), StoreError>,
        now: Instant,
    ) {
        self.metrics.store_write_seconds.observe(took);
        match result {
            Ok(()) => {
                self.metrics.points_stored_total += batch.len() as u64;
                if let Some(since) = self.writes.failing_since()
                    && self.store_failure_logged
                {
                    // The throttle keeps running: a store failing on and off must not
                    // log a pair of lines per failure.
                    self.store_failure_logged = false;
                    info!(
                        "store reachable again after {:.0} s; writing {} queued points",
                        now.duration_since(since).as_secs_f64(),
                        self.writes.len().saturating_sub(batch.len())
                    );
                }
                self.writes.written();
                self.store_up = true;
            }
            Err(e) => {
                self.metrics.store_write_errors_total += 1;
                self.store_up = false;
                let dropped = self.writes.failed(batch, now);
                if let Some(suppressed) = self.store_log.allow(now) {
                    self.store_failure_logged = true;
                    warn!(
                        "store write failed: {e}; {} points queued, retrying \
                         ({suppressed} similar failures since the last report)",
                        self.writes.len()
                    );
                }
                self.count_dropped(dropped, now);
            }
        }
        self.start_store_jobs(now);
    }

    fn count_dropped(&mut self, dropped: usize, now: Instant) {
        if dropped == 0 {
            return;
        }
        self.metrics.points_dropped_total += dropped as u64;
        if self.drop_log.allow(now).is_some() {
            warn!(
                "store write queue full: dropped the {dropped} oldest points \
                 ({} dropped since start)",
                self.metrics.points_dropped_total
            );
        }
    }

    fn on_retention(&mut self, result: Result<u64, StoreError>, now: Instant) {
        self.retention_running = false;
        match result {
            Ok(deleted) => {
                self.metrics.points_expired_total += deleted;
                // A full batch means more may be waiting: continue soon, in small steps.
                self.next_retention = if deleted >= u64::from(RETENTION_BATCH) {
                    now + Duration::from_millis(200)
                } else {
                    now + RETENTION_EVERY
                };
                if deleted > 0 {
                    debug!("retention deleted {deleted} points");
                }
            }
            Err(e) => {
                warn!("retention failed: {e}");
                self.next_retention = now + RETENTION_EVERY;
            }
        }
    }

    // ---- health, metrics, shutdown --------------------------------------------------

    fn gauges(&self, now: Instant) -> Gauges {
        Gauges {
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            connections: self.conns.len(),
            subscriptions: self
                .market
                .assets()
                .iter()
                .map(|a| (a.asset.name.clone(), a.subscribers.len()))
                .collect(),
            write_queue_points: self.writes.len(),
            feed_in_flight: self.feeds_in_flight,
            last_tick_time: self.last_point_time,
            store_up: self.store_up,
        }
    }

    /// `/health`: 200 while serving normally, 503 while the database is required but
    /// failing or no tick has recorded a point for too long.
    fn health_body(&self, now: Instant) -> (u16, String) {
        let uptime = now.duration_since(self.started).as_secs();
        let tick_age = if self.last_point_time > 0 {
            (epoch_now().as_secs() as i64 - self.last_point_time).max(0) as u64
        } else {
            uptime
        };
        let database = self.store.kind() != "memory";
        let mut problems = Vec::new();
        if database && !self.store_up {
            problems.push("database unreachable: points are queued in memory".to_string());
        }
        if tick_age > self.limits.health_max_tick_age.as_secs() {
            problems.push(format!("no quote recorded for {tick_age} s"));
        }
        if self.shutdown_deadline.is_some() {
            problems.push("shutting down".to_string());
        }
        let subscribed: usize = self
            .market
            .assets()
            .iter()
            .map(|a| a.subscribers.len())
            .sum();
        let body = serde_json::json!({
            "status": if problems.is_empty() { "ok" } else { "unavailable" },
            "uptime_seconds": uptime,
            "clients": self.conns.len(),
            "subscribed_clients": subscribed,
            "store": {
                "kind": self.store.kind(),
                "up": self.store_up,
                "queued_points": self.writes.len(),
            },
            "feed": {
                "source": self.feed.describe(),
                "last_tick": (self.last_point_time > 0).then_some(self.last_point_time),
                "last_tick_age_seconds": tick_age,
            },
            "problems": problems,
        });
        let status = if problems.is_empty() { 200 } else { 503 };
        (status, body.to_string())
    }

    fn on_signal(&mut self, now: Instant) {
        let mut got = false;
        for signal in self.signals.pending() {
            got = true;
            debug!("signal {signal}");
        }
        if !got {
            return;
        }
        if self.shutdown_deadline.is_some() {
            warn!("second signal: exiting at once");
            std::process::exit(1);
        }
        info!(
            "shutting down: closing {} connections, writing {} queued points",
            self.conns.len(),
            self.writes.len()
        );
        self.shutdown_deadline = Some(now + SHUTDOWN_WAIT);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let websocket = self.conns.get(key).is_some_and(Conn::is_websocket);
            let doom = if websocket {
                Doom::Close(CloseCode::Away, "server shutting down", false, None)
            } else {
                Doom::Drop(None)
            };
            self.doomed.push((key, doom));
        }
    }

    fn shutdown_finished(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        let done = self.conns.is_empty() && self.writes.is_empty() && !self.retention_running;
        done || now >= deadline
    }
}

const SLOW_CONSUMER: Doom = Doom::Close(
    CloseCode::Policy,
    "slow consumer",
    true,
    Some(DropReason::SlowConsumer),
);

const UNSUBSCRIBED_FRAME: &[u8] = b"\x81\x26{\"action\":\"unsubscribed\",\"message\":{}}";

/// Points deleted per retention statement at most.
const RETENTION_BATCH: u32 = 10_000;
/// Pause between retention passes once caught up.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

fn doom_for(key: usize, ended: Ended) -> Doom {
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

fn feed_error_kind(e: &FeedError) -> &'static str {
    match e {
        FeedError::Timeout => "timeout",
        FeedError::Status(_) => "status",
        FeedError::Connect(_) => "connect",
        FeedError::TooLarge(_) => "too_large",
        FeedError::Parse(_) => "parse",
    }
}

fn is_resource_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Time since the Unix epoch; a clock before 1970 reads as 0.
pub fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribed_frame_is_the_protocol_message() {
        assert_eq!(
            Bytes::from_static(UNSUBSCRIBED_FRAME),
            text_frame(protocol::UNSUBSCRIBED_MESSAGE)
        );
    }
}
