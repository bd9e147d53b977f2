//! The operations surface: signals and the shutdown they start, and `/health`.

use std::io;
use std::time::{Duration, Instant};

use log::{debug, error, info};
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::cluster::Role;
use crate::metrics::{Gauges, Metrics, ReloadOutcome};
use crate::store::StoreKind;
use crate::tls::Acceptor;

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
    /// A SIGHUP came: the TLS certificate and key are to be read again.
    reload_asked: bool,
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
    /// Listens for SIGINT and SIGTERM (stop) and SIGHUP (reload the TLS certificate
    /// and key; without TLS it is ignored, so that a closed terminal or a supervisor's
    /// reload does not kill the service) through `registry` under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Ops> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(Ops {
            signals,
            started: Instant::now(),
            shutdown_deadline: None,
            reload_asked: false,
        })
    }

    /// Reads the pending signals: the first SIGINT or SIGTERM asks for a clean stop
    /// (with a deadline), any later one for an immediate exit; a SIGHUP is remembered
    /// for [`Ops::take_reload`].
    pub fn on_signal(&mut self, now: Instant) -> Signal {
        let mut got = false;
        for signal in self.signals.pending() {
            debug!("signal {signal}");
            if signal == SIGHUP {
                self.reload_asked = true;
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

    /// Whether a SIGHUP came since the last call.
    pub fn take_reload(&mut self) -> bool {
        std::mem::take(&mut self.reload_asked)
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

    /// SIGHUP: reads the TLS certificate and key again, so that a renewed pair is served
    /// to new connections without a restart (open ones keep theirs). A pair that cannot
    /// be used leaves the previous one in service, and the log says why.
    pub fn reload_tls(&self, tls: Option<&mut Acceptor>, metrics: &mut Metrics) {
        let Some(acceptor) = tls else {
            info!(
                "SIGHUP received: TLS is off, so there is no certificate to reload; \
                 ws_assets keeps running (SIGTERM or SIGINT stops it)"
            );
            return;
        };
        match acceptor.reload() {
            Ok(()) => {
                metrics.tls_reloads_total.add(ReloadOutcome::Ok);
                info!(
                    "SIGHUP: TLS certificate reloaded ({}); new connections get it, \
                     open ones keep theirs",
                    acceptor.describe()
                );
            }
            Err(e) => {
                metrics.tls_reloads_total.add(ReloadOutcome::Failed);
                error!(
                    "SIGHUP: TLS certificate not reloaded, the previous one is still served: {e}"
                );
            }
        }
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
