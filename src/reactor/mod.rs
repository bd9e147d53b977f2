//! The event loop: one thread owns the listener, every connection, the tick clock and
//! all in-memory state. Nothing here blocks; feed and store calls go to the workers.
//!
//! Each second on the wall clock the loop starts a feed fetch for that second. When its
//! result comes back the points are recorded in the market, each point's frame is
//! encoded once and queued to every subscriber of its asset, and the points are queued
//! for the store.

mod clients;
mod ops;
mod storage;
mod ticks;

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

use crate::asset::{Asset, Point};
use crate::config::Config;
use crate::conn::{Conn, Ended, Incoming, Phase};
use crate::feed::{Feed, FeedError, Fetched};
use crate::frame::text_frame;
use crate::http::{self, Route};
use crate::market::Market;
use crate::metrics::{DropReason, Gauges, Metrics, TickOutcome};
use crate::protocol::{self, Request, RequestError};
use crate::store::{Store, StoreError};
use crate::throttle::Throttle;
use crate::workers::Workers;
use crate::writebehind::WriteBehind;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Rate of repeated warnings (feed failures, store failures, accept errors).
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Events handled between looks at the clock and the workers' results, so that the
/// ticks keep their second while thousands of clients subscribe at once.
const EVENTS_BETWEEN_CLOCK_CHECKS: usize = 32;
/// Largest incoming frame header plus a short request: tungstenite's read buffer size.
const READ_BUFFER_BYTES: usize = 512;

/// The test page, embedded in the binary.
pub const PAGE: &[u8] = include_bytes!("../../static/index.html");

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
    config: Config,
    /// The encoded `unsubscribed` reply, shared by every client.
    unsubscribed_frame: Bytes,
    /// tungstenite's settings for every connection, derived from `config`.
    ws_config: WebSocketConfig,
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
        } = parts;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let workers = Workers::start(config.worker_threads, waker)?;
        let ws_config = WebSocketConfig::default()
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
            config,
            ws_config,
            unsubscribed_frame: text_frame(protocol::UNSUBSCRIBED_MESSAGE),
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
}

/// Time since the Unix epoch; a clock before 1970 reads as 0.
pub fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}
