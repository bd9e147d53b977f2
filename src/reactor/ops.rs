//! The operations surface: signals and the shutdown they start, and `/health`.

use std::io;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::cluster::Role;
use crate::metrics::Gauges;
use crate::store::StoreKind;

/// How long shutdown waits for clients to close and queued points to be written.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// What the signals received in one step ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Nothing new (a spurious wake-up).
    Nothing,
    /// A first SIGINT or SIGTERM: stop cleanly.
    Stop,
    /// Another signal while stopping: give up at once.
    Abandon,
}

/// Signals, the shutdown deadline, and the service's age.
pub struct Ops {
    signals: Signals,
    started: Instant,
    shutdown_deadline: Option<Instant>,
}

/// What `/health` reports besides the gauges.
pub struct HealthFacts {
    /// The instance's role.
    pub role: Role,
    /// With a database: whether the connection listening for the leader's points is up.
    pub listening: Option<bool>,
    /// The store: a database must be reachable to be healthy.
    pub store: StoreKind,
    /// The feed, described.
    pub feed: String,
    /// A point older than this makes the service unhealthy.
    pub max_tick_age: Duration,
}

impl Ops {
    /// Listens for SIGINT and SIGTERM (stop) and SIGHUP (ignored, so that a closed
    /// terminal or a supervisor's reload does not kill the service) through `registry`
    /// under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Ops> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(Ops {
            signals,
            started: Instant::now(),
            shutdown_deadline: None,
        })
    }

    /// Reads the pending signals: the first asks for a clean stop (with a deadline),
    /// any later one for an immediate exit.
    pub fn on_signal(&mut self, now: Instant) -> Signal {
        let mut got = false;
        for signal in self.signals.pending() {
            debug!("signal {signal}");
            if signal == SIGHUP {
                info!(
                    "SIGHUP received: ws_assets has no configuration to reload and keeps \
                     running (SIGTERM or SIGINT stops it)"
                );
            } else {
                got = true;
            }
        }
        if !got {
            return Signal::Nothing;
        }
        if self.shutdown_deadline.is_some() {
            return Signal::Abandon;
        }
        self.shutdown_deadline = Some(now + SHUTDOWN_WAIT);
        Signal::Stop
    }

    /// Whether a shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// Whether a shutdown's time is up.
    pub fn past_deadline(&self, now: Instant) -> bool {
        self.shutdown_deadline.is_some_and(|at| now >= at)
    }

    /// Time since start.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.duration_since(self.started)
    }

    /// `/health`: 200 while serving normally, 503 while the database is required but
    /// failing, no tick has recorded a point for too long, or the service is stopping.
    pub fn health(&self, gauges: &Gauges, facts: &HealthFacts, now_epoch: i64) -> (u16, String) {
        let uptime = gauges.uptime_seconds as u64;
        let tick_age = if gauges.last_tick_time > 0 {
            (now_epoch - gauges.last_tick_time).max(0) as u64
        } else {
            uptime
        };
        let mut problems = Vec::new();
        if facts.store == StoreKind::Postgres && !gauges.store_up {
            problems.push("database unreachable: points are queued in memory".to_string());
        }
        if tick_age > facts.max_tick_age.as_secs() {
            problems.push(format!("no quote recorded for {tick_age} s"));
        }
        if self.stopping() {
            problems.push("shutting down".to_string());
        }
        let subscribed: usize = gauges.subscriptions.iter().map(|(_, n)| n).sum();
        let body = serde_json::json!({
            "status": if problems.is_empty() { "ok" } else { "unavailable" },
            "role": facts.role.label(),
            "listening": facts.listening,
            "uptime_seconds": uptime,
            "clients": gauges.connections,
            "subscribed_clients": subscribed,
            "store": {
                "kind": facts.store.label(),
                "up": gauges.store_up,
                "queued_points": gauges.write_queue_points,
            },
            "feed": {
                "source": facts.feed,
                "last_tick": (gauges.last_tick_time > 0).then_some(gauges.last_tick_time),
                "last_tick_age_seconds": tick_age,
            },
            "problems": problems,
        });
        let status = if problems.is_empty() { 200 } else { 503 };
        (status, body.to_string())
    }
}
