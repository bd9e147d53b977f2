//! Feed leadership: a session-level advisory lock on a connection of its own.
//!
//! A follower *waits* for the lock (`pg_advisory_lock`), so it takes over the moment
//! PostgreSQL ends the leader's session: at once when the leader's process dies (its
//! socket closes), and [`IDLE_SESSION_TIMEOUT`] after the leader's last check when its host
//! vanishes or its connection silently stops answering. The latter holds because the
//! election session sets `idle_session_timeout` (PostgreSQL 14 and later) and a leader
//! checks its connection every [`CHECK_EVERY`]: only a leader that no longer reaches the
//! server stays idle that long, and the server then ends its session and frees the lock,
//! without waiting for TCP keepalives.
//!
//! The wait is made of slices of [`WAIT_SLICE`] (`lock_timeout`), each under a deadline, so
//! an election connection that hangs is noticed within a slice and a check; a broken one
//! ends the wait at once, and so does [`Stop::stop`] (a cancel request).
//!
//! The leader checks its lock connection every second; when the check fails the session
//! (and the lock with it) may be gone, so it steps down at once and competes again once it
//! reconnects. Every call on the lock connection has a deadline, so a hung database cannot
//! freeze the election.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use postgres::error::SqlState;

use super::{Event, LEADER_LOCK_KEY, Reporter, Role};
use crate::store::StoreError;
use crate::store::deadline::Canceller;
use crate::store::dsn::PgSettings;
use crate::store::pgerror::classify;
use crate::store::postgres::{Session, connect_session};
use crate::throttle::Throttle;

/// Pause between two checks of a held lock's connection.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long the leader's check of its lock connection may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one slice of a follower's wait for the lock lasts (its `lock_timeout`) before
/// it is asked again on the same connection.
pub const WAIT_SLICE: Duration = Duration::from_secs(2);

/// Silence after which PostgreSQL ends an election session (`idle_session_timeout`): a
/// leader that has not checked its connection for this long has lost it, and its lock goes
/// to a waiting follower.
pub const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one (re)connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause before reconnecting a lost election connection.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How long the settings of a new election session may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Rate of the repeated warnings of an outage.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Tries once to take the leadership lock over `session`, waiting at most 2 s for the
/// answer (start-up, which must not wait for a leader to go).
pub fn try_lead(session: &mut Session) -> Result<bool, StoreError> {
    session.run(CHECK_TIMEOUT, "the leadership lock attempt", |client| {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
            .map_err(|e| classify(&e))?;
        row.try_get(0).map_err(|e| classify(&e))
    })
}

/// Runs the election for the life of the process (or until `stop`) on a thread of its
/// own, starting from `client` (already leader if `leading`).
pub fn spawn(
    config: PgSettings,
    client: Session,
    leading: bool,
    reporter: Reporter,
    stop: Stop,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("election".into())
        .spawn(move || Election::new(leading, reporter, stop).run(&config, client))?;
    Ok(())
}

/// Ends the election at shutdown: a leader's session (and its lock) is closed at once, so
/// another instance takes over without waiting for this one to exit, and a follower's wait
/// for the lock is cancelled, so it cannot become leader while it stops.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    inner: Mutex<StopInner>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct StopInner {
    stopped: bool,
    /// Cancels the wait for the lock in progress, if any.
    waiting: Option<Canceller>,
}

impl Stop {
    /// Asks the election to end; returns at once (a cancel request goes out on a helper
    /// thread).
    pub fn stop(&self) {
        let waiting = {
            let mut inner = self.inner();
            inner.stopped = true;
            inner.waiting.take()
        };
        self.0.changed.notify_all();
        if let Some(canceller) = waiting {
            canceller.cancel();
        }
    }

    /// Whether [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.inner().stopped
    }

    /// Sleeps for `pause` unless stopped first; returns whether stopped.
    fn sleep(&self, pause: Duration) -> bool {
        let inner = self.inner();
        let (inner, _) = self
            .0
            .changed
            .wait_timeout_while(inner, pause, |inner| !inner.stopped)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.stopped
    }

    /// Notes a wait that `canceller` can end; false (and no wait) once stopped.
    fn begin_wait(&self, canceller: Canceller) -> bool {
        let mut inner = self.inner();
        if inner.stopped {
            return false;
        }
        inner.waiting = Some(canceller);
        true
    }

    fn end_wait(&self) {
        self.inner().waiting = None;
    }

    fn inner(&self) -> MutexGuard<'_, StopInner> {
        self.0
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The election thread's state.
struct Election {
    leading: bool,
    reporter: Reporter,
    stop: Stop,
    /// Warnings of an outage that repeat every few seconds.
    log: Throttle,
}

/// What happened to the session in one step of the election.
enum Step {
    /// It is still usable.
    Keep,
    /// It failed and is dropped; a new one is opened after a pause.
    Lost,
    /// The election is over (stopped, or the reactor has gone).
    End,
}

impl Election {
    fn new(leading: bool, reporter: Reporter, stop: Stop) -> Election {
        Election {
            leading,
            reporter,
            stop,
            log: Throttle::new(LOG_EVERY),
        }
    }

    fn run(mut self, config: &PgSettings, first: Session) {
        let mut session = Some(first);
        loop {
            if self.stop.is_stopped() {
                // Dropping the session ends it, and a lock held goes with it.
                return;
            }
            let mut current = match session.take() {
                Some(current) => current,
                None => match connect_session(config, CONNECT_TIMEOUT) {
                    Ok(current) => current,
                    Err(e) => {
                        self.warn(&format!("cannot reconnect the election connection: {e}"));
                        if self.stop.sleep(RECONNECT_EVERY) {
                            return;
                        }
                        continue;
                    }
                },
            };
            if let Err(e) = prepare(&mut current) {
                self.warn(&format!("cannot set up the election connection: {e}"));
                drop(current);
                if self.stop.sleep(RECONNECT_EVERY) {
                    return;
                }
                continue;
            }
            // One connection serves until it fails.
            loop {
                let step = if self.leading {
                    self.hold(&mut current)
                } else {
                    self.wait(&mut current)
                };
                match step {
                    Step::Keep => {}
                    Step::Lost => break,
                    Step::End => return,
                }
            }
            // Dropped without waiting on a call still in flight.
            drop(current);
            if self.stop.sleep(RECONNECT_EVERY) {
                return;
            }
        }
    }

    /// A leader: checks its lock connection every [`CHECK_EVERY`]; steps down when a check
    /// fails.
    fn hold(&mut self, session: &mut Session) -> Step {
        if self.stop.sleep(CHECK_EVERY) {
            return Step::End;
        }
        match session.check(CHECK_TIMEOUT) {
            Ok(()) => Step::Keep,
            Err(e) => {
                warn!("lost the leadership lock's connection ({e}); stepping down");
                self.leading = false;
                if self.reporter.report(Event::Role(Role::Follower)) {
                    Step::Lost
                } else {
                    Step::End
                }
            }
        }
    }

    /// A follower: one slice of the wait for the lock.
    fn wait(&mut self, session: &mut Session) -> Step {
        match wait_for_lock(session, &self.stop) {
            Ok(false) if self.stop.is_stopped() => Step::End,
            Ok(false) => Step::Keep,
            // Taken while stopping: the session is dropped, so the lock goes at once.
            Ok(true) if self.stop.is_stopped() => Step::End,
            Ok(true) => {
                info!("took the feed leadership lock");
                self.leading = true;
                if self.reporter.report(Event::Role(Role::Leader)) {
                    Step::Keep
                } else {
                    Step::End
                }
            }
            Err(e) => {
                self.warn(&format!("cannot wait for the leadership lock: {e}"));
                Step::Lost
            }
        }
    }

    /// A warning that an outage repeats every few seconds, at most once a minute.
    fn warn(&mut self, text: &str) {
        if let Some(suppressed) = self.log.allow(Instant::now()) {
            warn!("{text} ({suppressed} similar warnings since the last report)");
        }
    }
}

/// Settings of an election session: no statement timeout (the DSN's `options` may set
/// one), a wait for the lock that ends after [`WAIT_SLICE`], and the server ending the
/// session after [`IDLE_SESSION_TIMEOUT`] of silence, where the server has that setting.
fn prepare(session: &mut Session) -> Result<(), StoreError> {
    let setup = format!(
        "SELECT set_config('statement_timeout', '0', false), \
                set_config('lock_timeout', '{}', false), \
                (SELECT set_config(name, '{}', false) FROM pg_settings \
                 WHERE name = 'idle_session_timeout')",
        WAIT_SLICE.as_millis(),
        IDLE_SESSION_TIMEOUT.as_millis()
    );
    let idle_timeout_set = session.run(SETUP_TIMEOUT, "the election settings", move |client| {
        let row = client.query_one(&setup, &[]).map_err(|e| classify(&e))?;
        let idle: Option<String> = row.try_get(2).map_err(|e| classify(&e))?;
        Ok(idle.is_some())
    })?;
    if !idle_timeout_set {
        warn_once_without_idle_timeout();
    }
    Ok(())
}

/// PostgreSQL before 14 has no `idle_session_timeout`: said once per process.
fn warn_once_without_idle_timeout() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        warn!(
            "this PostgreSQL has no idle_session_timeout (version 14 and later have it): a \
             leader whose host vanishes keeps the leadership until the server's TCP \
             keepalives end its session (tcp_keepalives_idle, tcp_keepalives_interval, \
             tcp_keepalives_count)"
        );
    });
}

/// Waits for the lock for at most one [`WAIT_SLICE`]: `true` once it is held, `false` when
/// the slice ended (or `stop` cancelled it) without it.
fn wait_for_lock(session: &mut Session, stop: &Stop) -> Result<bool, StoreError> {
    let Some(canceller) = session.canceller() else {
        return Err(StoreError::Unavailable(
            "the election connection was given up".into(),
        ));
    };
    if !stop.begin_wait(canceller) {
        return Ok(false);
    }
    let result = session.run(
        WAIT_SLICE + CHECK_TIMEOUT,
        "the wait for the leadership lock",
        |client| match client.execute("SELECT pg_advisory_lock($1)", &[&LEADER_LOCK_KEY]) {
            Ok(_) => Ok(true),
            Err(e)
                if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                    || e.code() == Some(&SqlState::QUERY_CANCELED) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify(&e)),
        },
    );
    stop.end_wait();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_ends_a_sleep_at_once_and_stays_stopped() {
        let stop = Stop::default();
        assert!(!stop.is_stopped());
        let started = Instant::now();
        assert!(!stop.sleep(Duration::from_millis(20)), "not stopped yet");
        assert!(started.elapsed() >= Duration::from_millis(20));

        let sleeper = stop.clone();
        let sleeping = thread::spawn(move || {
            let started = Instant::now();
            (sleeper.sleep(Duration::from_secs(60)), started.elapsed())
        });
        thread::sleep(Duration::from_millis(50));
        stop.stop();
        let (stopped, slept) = sleeping.join().unwrap();
        assert!(stopped);
        assert!(
            slept < Duration::from_secs(10),
            "woken by the stop: {slept:?}"
        );
        assert!(stop.is_stopped());
        assert!(stop.sleep(Duration::from_secs(60)), "no sleep once stopped");
    }

    #[test]
    fn the_idle_timeout_outlasts_the_checks_that_keep_a_leader_alive() {
        // A leader's session is silent for a check's pause plus the check's own answer;
        // the server must not end it for that, only for a missed check or more.
        assert!(IDLE_SESSION_TIMEOUT >= CHECK_EVERY * 2);
        assert!(IDLE_SESSION_TIMEOUT <= CHECK_EVERY + CHECK_TIMEOUT);
    }
}
