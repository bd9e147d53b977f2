//! Client-side deadlines for PostgreSQL: no call of the service waits on the server for
//! longer than it was given.
//!
//! A `postgres::Client` call blocks until the server answers, and the driver offers no way
//! to interrupt it from outside. A server that accepts bytes and never answers (hung, or
//! behind a network that swallows them) keeps such a call blocked for ever: the kernel
//! acknowledges what is sent, so TCP timeouts and keepalives never fire. So every call goes
//! through a [`Session`], which hands the client to a helper thread for the call and waits
//! at most until the deadline. Past it the caller gets [`StoreError::Unavailable`] at once,
//! a cancel request is sent to the server (a server that is slow rather than gone then
//! stops the statement), and the connection is given up: the helper keeps the client and
//! drops it when the server answers or the connection breaks. The same goes for opening
//! a connection ([`connect`]) and for dropping one with a request in flight ([`discard`]).
//!
//! Helper threads are counted by kind. Behind a server that stays hung, abandoned helpers
//! would pile up, so past a limit a call fails at once instead of starting another.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use log::debug;

use super::StoreError;
use super::pgerror::classify;
use super::tls::Connector;

/// Threads running one call each.
static CALLS: Helpers = Helpers::new("pg-call", 64);
/// Threads opening one connection each.
static CONNECTS: Helpers = Helpers::new("pg-connect", 16);
/// Threads sending one cancel request each.
static CANCELS: Helpers = Helpers::new("pg-cancel", 8);
/// Threads dropping one client each.
static DISCARDS: Helpers = Helpers::new("pg-discard", 64);

/// Helper threads of one kind, at most `max` alive at once.
struct Helpers {
    name: &'static str,
    max: usize,
    alive: AtomicUsize,
}

/// Why no helper thread was started.
#[derive(Debug)]
enum NoHelper {
    /// `max` helpers of this kind are still running (waiting on the server).
    Busy(usize),
    /// The system refused a thread.
    Spawn(std::io::Error),
}

impl fmt::Display for NoHelper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoHelper::Busy(n) => write!(f, "{n} earlier calls are still waiting for the server"),
            NoHelper::Spawn(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl Helpers {
    const fn new(name: &'static str, max: usize) -> Helpers {
        Helpers {
            name,
            max,
            alive: AtomicUsize::new(0),
        }
    }

    /// Runs `job` on a new thread, unless `max` of this kind are alive. When no thread is
    /// started, `job` is dropped on the caller's thread.
    fn spawn(&'static self, job: impl FnOnce() + Send + 'static) -> Result<(), NoHelper> {
        if self.alive.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.alive.fetch_sub(1, Ordering::SeqCst);
            return Err(NoHelper::Busy(self.max));
        }
        // Counted down when the thread ends (or the job is dropped unrun), panics included.
        let alive = Alive(self);
        thread::Builder::new()
            .name(self.name.to_string())
            .spawn(move || {
                let _alive = alive;
                job();
            })
            .map(drop)
            .map_err(NoHelper::Spawn)
    }
}

struct Alive(&'static Helpers);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens a connection with `tls`, waiting at most `limit` for the whole of it: the
/// driver's `connect_timeout` bounds only the TCP connect, and a server that accepts but
/// never answers would hang the handshake. A driver error is classified (see
/// [`classify`]); running out of time is `Unavailable`.
pub fn connect(
    config: &postgres::Config,
    tls: &Connector,
    limit: Duration,
) -> Result<postgres::Client, StoreError> {
    let mut config = config.clone();
    let tls = tls.clone();
    if config.get_connect_timeout().is_none_or(|t| *t > limit) && !limit.is_zero() {
        config.connect_timeout(limit);
    }
    let (tx, rx) = mpsc::channel();
    CONNECTS
        .spawn(move || {
            // The receiver is gone when the attempt timed out; the client is then dropped
            // here, on this helper thread, which may wait for the server to close it.
            let _ = tx.send(config.connect(tls));
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot open a connection: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(classify(&e)),
        Err(RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(format!(
            "the server did not complete the connection within {:.2} s",
            limit.as_secs_f64()
        ))),
        Err(RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable(
            "the connection attempt ended without a result".to_string(),
        )),
    }
}

/// Drops a client without waiting for it: `postgres::Client`'s own drop sends Terminate
/// and blocks until the server has answered every request in flight and closed the
/// connection, which a hung server never does. The drop runs on a helper thread.
pub fn discard(client: postgres::Client) {
    let slot = Arc::new(Mutex::new(Some(client)));
    let for_thread = Arc::clone(&slot);
    let spawned = DISCARDS.spawn(move || {
        let client = for_thread.lock().ok().and_then(|mut c| c.take());
        drop(client);
    });
    if let Err(e) = spawned {
        debug!("leaking a PostgreSQL client instead of waiting for it: {e}");
        // No thread to wait on: leak this one client rather than block the caller.
        if let Some(client) = slot.lock().ok().and_then(|mut c| c.take()) {
            std::mem::forget(client);
        }
    }
}

/// A connection whose every call has a deadline (see the module documentation).
///
/// Once a call has overrun its deadline or a check has failed, the session is lost
/// ([`Session::is_lost`]): open another. Dropping a session never blocks.
pub struct Session {
    client: Option<postgres::Client>,
    tls: Connector,
    /// The server, for messages (no password).
    target: String,
    /// A check failed; its query may still be in flight.
    broken: bool,
}

impl Session {
    /// Wraps a connected `client`; `tls` is what it was opened with (cancel requests use
    /// it) and `target` names the server in messages.
    pub fn new(client: postgres::Client, tls: Connector, target: String) -> Session {
        Session {
            client: Some(client),
            tls,
            target,
            broken: false,
        }
    }

    /// Runs `call` on the client, waiting at most `limit` for it. `what` names the call in
    /// the error of a missed deadline, e.g. `"the batch write"`.
    ///
    /// Past the deadline the statement is cancelled, the session is lost, and the answer
    /// is `Unavailable`; the call goes on (on a helper thread) until the server answers
    /// or the connection breaks, and its result is dropped.
    pub fn run<T, F>(&mut self, limit: Duration, what: &str, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut postgres::Client) -> Result<T, StoreError> + Send + 'static,
    {
        if self.broken {
            return Err(self.lost());
        }
        let Some(mut client) = self.client.take() else {
            return Err(self.lost());
        };
        let token = client.cancel_token();
        let (tx, rx) = mpsc::channel();
        CALLS
            .spawn(move || {
                let result = call(&mut client);
                // When the caller has given up, the client is dropped here, on this helper
                // thread, which may wait for the server to close it.
                let _ = tx.send((client, result));
            })
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL at {}: {e}", self.target)))?;
        match rx.recv_timeout(limit) {
            Ok((client, result)) => {
                self.client = Some(client);
                result
            }
            Err(RecvTimeoutError::Timeout) => {
                cancel(token, self.tls.clone());
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL at {} did not answer {what} within {:.1} s; the statement \
                     was cancelled and the connection dropped",
                    self.target,
                    limit.as_secs_f64()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable(format!(
                "{what} on PostgreSQL at {} ended without a result",
                self.target
            ))),
        }
    }

    /// Checks that the server answers a trivial query within `limit` (the driver bounds
    /// this itself, without a helper thread). A failure loses the session.
    pub fn check(&mut self, limit: Duration) -> Result<(), StoreError> {
        if self.broken {
            return Err(self.lost());
        }
        let Some(client) = self.client.as_mut() else {
            return Err(self.lost());
        };
        client.is_valid(limit).map_err(|e| {
            // A timed-out check leaves its query in flight: the client is discarded.
            self.broken = true;
            match classify(&e) {
                StoreError::Unavailable(why) | StoreError::Query(why) => {
                    StoreError::Unavailable(format!(
                        "PostgreSQL at {} failed a {:.1} s check: {why}",
                        self.target,
                        limit.as_secs_f64()
                    ))
                }
                other => other,
            }
        })
    }

    /// The client, for a call the driver bounds itself (waiting for notifications with a
    /// timeout); `Unavailable` once the session is lost.
    pub fn client(&mut self) -> Result<&mut postgres::Client, StoreError> {
        if self.broken {
            return Err(self.lost());
        }
        let target = &self.target;
        self.client.as_mut().ok_or_else(|| {
            StoreError::Unavailable(format!("the connection to {target} was given up"))
        })
    }

    /// A way to cancel, from another thread, the statement this session will be running
    /// (e.g. a wait for a lock that a shutdown ends); `None` once the session is lost.
    pub fn canceller(&self) -> Option<Canceller> {
        if self.broken {
            return None;
        }
        self.client.as_ref().map(|client| Canceller {
            token: client.cancel_token(),
            tls: self.tls.clone(),
        })
    }

    /// Whether the session can no longer be used: a call overran its deadline, a check
    /// failed, or the connection closed.
    pub fn is_lost(&self) -> bool {
        self.broken || self.client.as_ref().is_none_or(postgres::Client::is_closed)
    }

    fn lost(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "the connection to {} was given up after a failure",
            self.target
        ))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if client.is_closed() {
                // Nothing left to wait for.
                drop(client);
            } else {
                // Even an idle client's drop sends Terminate and then waits for the server
                // to close the connection, which a hung server never does.
                discard(client);
            }
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

/// Cancels the statement a [`Session`] is running, from another thread: a statement that
/// waits on purpose (for a lock) is ended without waiting for its own timeout.
pub struct Canceller {
    token: postgres::CancelToken,
    tls: Connector,
}

impl Canceller {
    /// Sends the cancel request on a helper thread and returns at once; the statement then
    /// fails with `query_canceled` (if it is still running when the request arrives).
    pub fn cancel(self) {
        cancel(self.token, self.tls);
    }
}

impl fmt::Debug for Canceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Canceller").finish_non_exhaustive()
    }
}

/// Asks the server to cancel the statement running under `token`, on a helper thread: the
/// request opens a connection of its own, which a hung server may never answer either.
fn cancel(token: postgres::CancelToken, tls: Connector) {
    let sent = CANCELS.spawn(move || {
        if let Err(e) = token.cancel_query(tls) {
            debug!(
                "cancel request not delivered: {}",
                super::pgerror::error_text(&e)
            );
        }
    });
    if let Err(e) = sent {
        debug!("no cancel request sent: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;

    static TEST_HELPERS: Helpers = Helpers::new("test-helper", 2);

    fn blocked(gate: &Arc<Mutex<Receiver<()>>>) -> impl FnOnce() + Send + 'static {
        let gate = Arc::clone(gate);
        move || {
            let _ = gate.lock().map(|rx| rx.recv());
        }
    }

    #[test]
    fn helpers_are_bounded_and_counted_down_when_they_end() {
        let (open, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        TEST_HELPERS.spawn(blocked(&gate)).unwrap();
        TEST_HELPERS.spawn(blocked(&gate)).unwrap();
        let third = TEST_HELPERS.spawn(blocked(&gate));
        assert!(matches!(third, Err(NoHelper::Busy(2))), "{third:?}");
        assert!(third.unwrap_err().to_string().contains("still waiting"));
        open.send(()).unwrap();
        open.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TEST_HELPERS.alive.load(Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "helpers never ended");
            thread::sleep(Duration::from_millis(10));
        }
        let (done_tx, done_rx) = mpsc::channel();
        TEST_HELPERS
            .spawn(move || done_tx.send(()).unwrap())
            .unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
}
