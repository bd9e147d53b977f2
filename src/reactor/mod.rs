//! The event loop: one thread owns the listener, every connection, the tick clock and
//! all in-memory state. Nothing here blocks; feed and store calls go to the workers.
//!
//! The loop has three event sources besides the connections, each with a token and a
//! handler: the listener, the workers' waker (finished jobs) and the signals. The state
//! is split into parts that own it:
//!
//! - [`clients`]: every connection, from accept to close, and the fan-out writes (each
//!   over a [`transport`]: the plain socket, or TLS over it);
//! - [`ticks`]: the wall-clock second, the feed fetches and their results;
//! - [`store_jobs`]: the write-behind queue and retention jobs of the store;
//! - [`ops`]: signals (shutdown, the TLS certificate's renewal) and `/health`;
//! - [`role`]: the role among several instances on one database, and the leader's
//!   points as a follower hears them (the notifications source);
//!
//! plus the [`Market`] (history and subscribers) and the [`Metrics`], which the parts
//! are lent for the call that needs them. The way a tick travels through these parts,
//! from the fetch to the client's socket and the store, is told once, in the crate's
//! documentation (`lib.rs`); [`Reactor::deliver`] is where a second's points meet
//! clients and store.

pub(crate) mod clients;
mod jobs;
mod ops;
mod role;
mod store_jobs;
mod ticks;
mod transport;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::event::Event as Readiness;
use mio::net::TcpListener;
use mio::{Events, Poll, Token, Waker};

use crate::asset::{Asset, Point};
use crate::clock::{epoch_now, epoch_second};
use crate::cluster::{self, Event, Membership, Role};
use crate::config::Config;
use crate::feed::Feed;
use crate::give_back::MemoryGiveBack;
use crate::http;
use crate::logsink;
use crate::market::Market;
use crate::metrics::{Gauges, Metrics, TickOutcome};
use crate::store::Store;
use crate::tls::Acceptor;
use crate::workers::Workers;

use clients::{Asked, Clients};
use jobs::Done;
use ops::{HealthFacts, Ops, Signal};
use role::RoleState;
use store_jobs::StoreJobs;
use ticks::Ticks;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Events handled between looks at the clock and the workers' results, so that the
/// ticks keep their second while thousands of clients subscribe at once.
const EVENTS_BETWEEN_CLOCK_CHECKS: usize = 32;

/// What the reactor is built from; assembled at start-up by `service`.
pub struct Parts {
    /// Validated configuration.
    pub config: Config,
    /// With TLS configured: the certificate and key new connections get.
    pub tls: Option<Acceptor>,
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
    /// The second the history was loaded (or backfilled) up to. The clock goes on from
    /// the second after it: one that began while the service was starting still gets
    /// its tick, instead of a hole nobody counted.
    pub history_until: i64,
    /// With a database: the role won at start-up and what the cluster threads need.
    pub membership: Option<Membership>,
}

/// Where a second's points come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// This instance's own feed fetch.
    Feed,
    /// The leader's notification, heard as it published them (a follower).
    Notified,
    /// The table, read after the listen connection (re)started (a follower).
    CatchUp,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A signal stopped it and the clean-up ran (clients closed, points written, or
    /// the shutdown's time ran out).
    Clean,
    /// A second signal came during the clean-up: the caller should exit at once.
    Abandoned,
}

/// The event loop and the parts it wires together.
pub struct Reactor {
    poll: Poll,
    config: Rc<Config>,
    workers: Workers<Done>,
    market: Market,
    metrics: Metrics,
    clients: Clients,
    ticks: Ticks,
    store: StoreJobs,
    ops: Ops,
    role: RoleState,
    give_back: MemoryGiveBack,
}

impl Reactor {
    /// Builds the loop around a bound listener; workers and signal handlers start here.
    pub fn new(parts: Parts) -> io::Result<Reactor> {
        let Parts {
            config,
            tls,
            listener,
            market,
            feed,
            store,
            initial_writes,
            history_until,
            membership,
        } = parts;
        let config = Rc::new(config);
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let workers = Workers::start(config.worker_threads, Arc::clone(&waker))?;
        let role = match membership {
            None => RoleState::standalone(),
            Some(membership) => {
                let first = membership.role;
                let threads = cluster::start(membership, waker)?;
                RoleState::member(first, threads, config.follower_fallback)
            }
        };
        let clients = Clients::new(
            poll.registry().try_clone()?,
            listener,
            LISTENER,
            Rc::clone(&config),
            tls,
        )?;
        let ops = Ops::new(poll.registry(), SIGNALS)?;
        let assets: Arc<[Asset]> = market.assets().iter().map(|a| a.asset.clone()).collect();
        let ticks = Ticks::new(feed, assets, config.rates_max_in_flight, history_until);
        let mut store = StoreJobs::new(store, config.write_queue_points, config.retention());
        let mut metrics = Metrics::default();
        store.queue(&initial_writes, Instant::now(), &mut metrics);
        Ok(Reactor {
            poll,
            config,
            workers,
            market,
            metrics,
            clients,
            ticks,
            store,
            ops,
            role,
            give_back: MemoryGiveBack::new(Instant::now()),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.clients.local_addr()
    }

    /// Runs until a signal has stopped the service and its clean-up is done (or was
    /// abandoned by a second signal).
    pub fn run(mut self) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(1024);
        let stopped = 'run: loop {
            if let Err(e) = self.poll.poll(&mut events, Some(self.poll_timeout())) {
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
                    self.on_clock(now);
                }
                match event.token() {
                    LISTENER => self.clients.accept(now, &mut self.metrics),
                    WAKER => {} // results are taken on the clock
                    SIGNALS => {
                        if self.on_signal(now) == Signal::Abandon {
                            break 'run Stopped::Abandoned;
                        }
                    }
                    Token(key) => self.on_client(key, event, now),
                }
                self.end_doomed(now);
            }
            self.clients
                .resume_reads(now, &mut self.market, &mut self.metrics);
            self.end_doomed(now);
            self.on_clock(now);
            if self.ops.stopping()
                && ((self.clients.only_probes_left() && self.store.is_idle())
                    || self.ops.past_deadline(now))
            {
                break Stopped::Clean;
            }
        };
        let leftover = self.store.queued();
        if stopped == Stopped::Clean {
            if leftover > 0 {
                error!("exiting with {leftover} points not written to the store");
            }
            info!("stopped");
        }
        Ok(stopped)
    }

    /// Time until the next wall-clock second (or sooner, to resume accepting).
    fn poll_timeout(&self) -> Duration {
        let now = epoch_now();
        let mut timeout = Duration::from_secs(now.as_secs() + 1).saturating_sub(now);
        if let Some(at) = self.clients.accept_paused_until() {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        if self.ops.stopping() {
            timeout = timeout.min(Duration::from_millis(50));
        }
        if self.clients.more_to_read() {
            timeout = Duration::ZERO;
        }
        timeout
    }

    // ---- event handlers ----------------------------------------------------------

    /// A connection's socket is ready.
    fn on_client(&mut self, key: usize, event: &Readiness, now: Instant) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            let asked = self
                .clients
                .on_readable(key, now, &mut self.market, &mut self.metrics);
            if let Some(asked) = asked {
                self.answer(asked, now);
            }
        }
        if event.is_writable() {
            self.clients.flush(key, &mut self.metrics);
        }
    }

    /// A signal arrived: the first SIGINT or SIGTERM starts the shutdown, SIGHUP
    /// reloads the TLS certificate.
    fn on_signal(&mut self, now: Instant) -> Signal {
        let signal = self.ops.on_signal(now);
        if self.ops.take_reload() {
            self.ops
                .reload_tls(self.clients.tls_mut(), &mut self.metrics);
        }
        match signal {
            Signal::Nothing => {}
            Signal::Stop => {
                info!(
                    "shutting down: closing {} connections, writing {} queued points",
                    self.clients.len(),
                    self.store.queued()
                );
                self.role.stop_competing();
                self.clients.close_all();
            }
            Signal::Abandon => error!(
                "second signal: exiting at once with {} points not written to the store",
                self.store.queued()
            ),
        }
        signal
    }

    /// The clock: finished jobs first, then, once per wall-clock second, the tick and
    /// the sweep of connection deadlines.
    fn on_clock(&mut self, now: Instant) {
        self.take_results(now);
        self.clients.resume_accepting(now, &mut self.metrics);
        self.store.start(now, self.ops.stopping(), &self.workers);
        if let Some(second) = self.ticks.new_second(now, &mut self.metrics) {
            self.market.trim(second);
            if !self.ops.stopping() && self.role.polls_feed(now) {
                if self.role.in_fallback() {
                    self.metrics.fallback_polling_seconds_total += 1;
                }
                self.ticks
                    .start_fetch(second, &self.workers, &mut self.metrics);
            }
            self.clients.sweep(now, &self.market, &mut self.metrics);
            let shrank = self.clients.shrink_after_peak(&mut self.market);
            self.give_back.run(now, shrank);
        }
        self.end_doomed(now);
    }

    /// Takes every finished worker job and every cluster event.
    fn take_results(&mut self, now: Instant) {
        while let Some(event) = self.role.next_event() {
            self.on_cluster_event(event, now);
        }
        while let Some(done) = self.workers.try_recv() {
            match done {
                Done::Feed(fetch) => {
                    if let Some((time, quotes)) =
                        self.ticks.on_fetched(fetch, now, &mut self.metrics)
                    {
                        let points = quotes
                            .into_iter()
                            .map(|q| Point {
                                asset_id: q.asset_id,
                                time,
                                value: q.value,
                            })
                            .collect();
                        self.deliver(time, points, Source::Feed, now);
                    }
                }
                Done::Write(write) => {
                    self.store.on_written(write, now, &mut self.metrics);
                    self.store.start(now, self.ops.stopping(), &self.workers);
                }
                Done::Retention(result) => self.store.on_retention(result, now, &mut self.metrics),
            }
        }
    }

    /// What the cluster threads report: role changes, the listen connection, and on a
    /// follower the leader's points.
    fn on_cluster_event(&mut self, event: Event, now: Instant) {
        let following = self.role.role() == Role::Follower;
        match event {
            Event::Role(role) => {
                if self.role.set_role(role, now) {
                    self.metrics.leader_changes_total += 1;
                }
            }
            Event::Listening => self.role.set_listening(true),
            Event::ListenLost(why) => {
                warn!("not listening for the leader's points: {why}; reconnecting");
                self.role.set_listening(false);
            }
            Event::CatchUp(points) if following => self.hear(points, Source::CatchUp, now),
            Event::Notified { points, .. } => {
                self.metrics.notifications_received_total += 1;
                if following {
                    // The leader is alive: a follower polling on its own stops.
                    self.role.heard(now, true);
                    self.hear(points, Source::Notified, now);
                } else {
                    // A leader hears what it published, or, just after taking over, what
                    // the leader before it stored: the stored value wins in the history.
                    for point in points {
                        self.market.merge(point);
                    }
                }
            }
            Event::CatchUp(_) => {}
        }
    }

    /// A follower hears stored points (a notification, or the catch-up after
    /// (re)connecting): those of seconds it already has, having polled the feed on its
    /// own, go into the history, the stored value winning; the rest are delivered live,
    /// second by second in order.
    fn hear(&mut self, points: Vec<Point>, source: Source, now: Instant) {
        let mut live: Vec<Point> = points
            .into_iter()
            .filter(|p| !self.market.merge(*p))
            .collect();
        live.sort_by_key(|p| (p.time, p.asset_id));
        let mut rest = live.as_slice();
        while let Some(first) = rest.first() {
            let same = rest.iter().take_while(|p| p.time == first.time).count();
            let (second, after) = rest.split_at(same);
            self.deliver(first.time, second.to_vec(), source, now);
            rest = after;
        }
    }

    /// Records one second's points in the market and writes each new point's frame to its
    /// subscribers. Points this instance fetched itself (a follower polling on its own
    /// too: the table keeps whichever value of a second reached it first) are handed to
    /// the store first: the write carries the notification, so the followers' fan-outs
    /// run while this one writes to its own clients.
    fn deliver(&mut self, time: i64, candidates: Vec<Point>, source: Source, now: Instant) {
        let delay = epoch_now().saturating_sub(Duration::from_secs(time.max(0) as u64));
        self.metrics.tick_delay_seconds.observe(delay);
        if source == Source::Notified {
            self.metrics.follower_lag_seconds.observe(delay);
        }
        let mut frames = Vec::with_capacity(candidates.len());
        let mut points = Vec::with_capacity(candidates.len());
        for point in candidates {
            if let Some(recorded) = self.market.record(point) {
                frames.push(recorded);
                points.push(point);
            }
        }
        if points.is_empty() {
            self.metrics.ticks_total.add(TickOutcome::Empty);
            return;
        }
        if source == Source::Feed {
            self.store.queue(&points, now, &mut self.metrics);
            self.store.start(now, self.ops.stopping(), &self.workers);
        }
        let fanout_started = Instant::now();
        for (index, frame) in &frames {
            let recipients = self.market.recipients(*index, time);
            self.clients.fan_out(&recipients, frame, &mut self.metrics);
        }
        self.metrics
            .fanout_seconds
            .observe(fanout_started.elapsed());
        self.metrics.ticks_total.add(TickOutcome::Ok);
        self.metrics.points_total += points.len() as u64;
        self.ticks.recorded(time);
        self.role.heard(now, source != Source::Feed);
    }

    /// Answers `/health` or `/metrics` from the state of every part.
    fn answer(&mut self, asked: Asked, now: Instant) {
        let gauges = self.gauges(now);
        let (key, head_only, response) = match asked {
            Asked::Health { key, head_only } => {
                let facts = HealthFacts {
                    role: self.role.role(),
                    listening: (self.role.role() != Role::Standalone)
                        .then(|| self.role.listening()),
                    store: self.store.kind(),
                    feed: self.ticks.describe_feed(),
                    max_tick_age: self.config.health_max_tick_age,
                };
                let now_epoch = epoch_second();
                let (status, body) = self.ops.health(&gauges, &facts, now_epoch);
                let content_type = "application/json";
                (key, head_only, (status, content_type, body))
            }
            Asked::Metrics { key, head_only } => {
                let body = self.metrics.render(&gauges);
                let content_type = "text/plain; version=0.0.4; charset=utf-8";
                (key, head_only, (200, content_type, body))
            }
        };
        let (status, content_type, body) = response;
        let response = http::response(status, content_type, "", body.as_bytes(), head_only);
        self.clients.respond(key, response, now, &mut self.metrics);
    }

    fn gauges(&self, now: Instant) -> Gauges {
        Gauges {
            uptime_seconds: self.ops.uptime(now).as_secs_f64(),
            connections: self.clients.len(),
            subscriptions: self
                .market
                .assets()
                .iter()
                .map(|a| (a.asset.name.clone(), a.subscribers.len()))
                .collect(),
            write_queue_points: self.store.queued(),
            feed_in_flight: self.ticks.in_flight(),
            last_tick_time: self.ticks.last_point_time(),
            store_up: self.store.is_up(),
            log_lines_dropped: logsink::lines_dropped(),
            role: Some(self.role.role()),
        }
    }

    fn end_doomed(&mut self, now: Instant) {
        self.clients
            .end_doomed(now, &mut self.market, &mut self.metrics);
    }
}
