//! Feed leadership: a session-level advisory lock on a connection of its own.
//!
//! A follower tries the lock every second. The leader checks its lock connection every
//! second; when the check fails the session (and the lock with it) may be gone, so it
//! steps down at once and competes again once it reconnects. Every call on the lock
//! connection has a deadline, so a hung database cannot freeze the election.

use std::thread;
use std::time::Duration;

use log::{info, warn};

use super::{Event, LEADER_LOCK_KEY, Reporter, Role};
use crate::store::StoreError;
use crate::store::dsn::PgSettings;
use crate::store::pgerror::classify;
use crate::store::postgres::{Session, connect_session};

/// Pause between attempts at the lock, and between checks of a held one.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long the leader's check of its lock connection, or an attempt at the lock, may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one reconnection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Tries once to take the leadership lock over `session`, waiting at most 2 s for the answer.
pub fn try_lead(session: &mut Session) -> Result<bool, StoreError> {
    session.run(CHECK_TIMEOUT, "the leadership lock attempt", |client| {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
            .map_err(|e| classify(&e))?;
        row.try_get(0).map_err(|e| classify(&e))
    })
}

/// Runs the election for the life of the process on a thread of its own, starting
/// from `client` (already leader if `leading`).
pub fn spawn(
    config: PgSettings,
    client: Session,
    leading: bool,
    reporter: Reporter,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("election".into())
        .spawn(move || run(&config, Some(client), leading, &reporter))?;
    Ok(())
}

fn run(config: &PgSettings, mut client: Option<Session>, mut leading: bool, reporter: &Reporter) {
    loop {
        let Some(mut session) = client.take() else {
            match connect_session(config, CONNECT_TIMEOUT) {
                Ok(session) => client = Some(session),
                Err(_) => thread::sleep(RETRY_EVERY),
            }
            continue;
        };
        if leading {
            if let Err(e) = session.check(CHECK_TIMEOUT) {
                warn!("lost the leadership lock's connection ({e}); stepping down");
                leading = false;
                if !reporter.report(Event::Role(Role::Follower)) {
                    return;
                }
                // Dropped without waiting on a check still in flight.
                drop(session);
                continue;
            }
        } else {
            match try_lead(&mut session) {
                Ok(true) => {
                    info!("took the feed leadership lock");
                    leading = true;
                    if !reporter.report(Event::Role(Role::Leader)) {
                        return;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    warn!("cannot try the leadership lock: {e}");
                    drop(session);
                    thread::sleep(RETRY_EVERY);
                    continue;
                }
            }
        }
        client = Some(session);
        thread::sleep(RETRY_EVERY);
    }
}
