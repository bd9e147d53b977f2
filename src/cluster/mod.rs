//! Several instances on one PostgreSQL: which one polls the feed, and how the others
//! hear of its points.
//!
//! Exactly one instance, the leader, holds a session-level advisory lock on a dedicated
//! connection and polls the feed ([`election`]); the others wait for that lock, so one of
//! them takes over as soon as PostgreSQL ends the leader's session. The lock is the only
//! source of truth, so an instance whose lock connection fails steps down at once. The leader publishes
//! each write with `NOTIFY` in the same statement (`store::publish`); followers `LISTEN`
//! on a connection of their own ([`listen`]). Both run on threads of their own and report
//! to the reactor as [`Event`]s, waking it through its waker, so it never blocks.

pub mod election;
pub mod listen;

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use log::warn;
use mio::Waker;

use crate::asset::Point;
use crate::store::dsn::PgSettings;
use crate::store::postgres::Session;

/// The advisory-lock key of feed leadership (`ws_alead`), distinct from the
/// migrations' lock.
pub const LEADER_LOCK_KEY: i64 = 0x7773_5f61_6c65_6164;

/// What an instance does about the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No database: the only instance, polling the feed.
    Standalone,
    /// Holds the leadership lock: polls the feed and publishes its points.
    Leader,
    /// Streams the leader's points (and polls the feed itself only while it hears none).
    Follower,
}

impl Role {
    /// `standalone`, `leader` or `follower`, for `/health`, `/metrics` and the log.
    pub fn label(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// What the cluster threads report to the reactor.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The election's verdict changed.
    Role(Role),
    /// The listen connection is up and listening.
    Listening,
    /// The listen connection was lost; the text says why.
    ListenLost(String),
    /// Stored points read after (re)connecting, oldest first: what a follower may have
    /// missed while it was not listening.
    CatchUp(Vec<Point>),
    /// One notification: points of one second, as the leader stored them.
    Notified {
        /// The points' second.
        time: i64,
        /// Its points (a part of them, for a second split over several notifications).
        points: Vec<Point>,
    },
}

/// The sending end the threads share: each event wakes the reactor.
#[derive(Clone)]
pub struct Reporter {
    events: Sender<Event>,
    waker: Arc<Waker>,
}

impl Reporter {
    /// Sends `event` and wakes the reactor; false once the reactor has gone.
    pub fn report(&self, event: Event) -> bool {
        if self.events.send(event).is_err() {
            return false;
        }
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the reactor: {e}");
        }
        true
    }
}

/// A channel of events that wake the reactor through `waker`.
pub fn channel(waker: Arc<Waker>) -> (Reporter, Receiver<Event>) {
    let (events, receiver) = mpsc::channel();
    (Reporter { events, waker }, receiver)
}

/// What the reactor needs to take part: the database, the lock connection and the
/// role won at start-up.
pub struct Membership {
    /// The connection settings, for the election's and listener's connections.
    pub config: PgSettings,
    /// The connection that tried the lock at start-up (and holds it for a leader).
    pub lock_client: Session,
    /// The role won at start-up.
    pub role: Role,
    /// Seconds of history a catch-up reads.
    pub window: u32,
}

/// The running cluster threads, as the reactor sees them.
pub struct Threads {
    /// What they report.
    pub events: Receiver<Event>,
    /// Ends the election at shutdown.
    pub stop: election::Stop,
}

/// Starts the election and listener threads of `membership`, reporting through
/// `waker`.
pub fn start(membership: Membership, waker: Arc<Waker>) -> std::io::Result<Threads> {
    let (reporter, events) = channel(waker);
    let leading = membership.role == Role::Leader;
    let stop = election::Stop::default();
    election::spawn(
        membership.config.clone(),
        membership.lock_client,
        leading,
        reporter.clone(),
        stop.clone(),
    )?;
    listen::spawn(membership.config, membership.window, reporter)?;
    Ok(Threads { events, stop })
}
