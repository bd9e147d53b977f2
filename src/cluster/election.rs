//! Feed leadership: a session-level advisory lock on a connection of its own.
//!
//! A follower tries the lock every second. The leader checks its lock connection every
//! second; when the check fails the session (and the lock with it) may be gone, so it
//! steps down at once and competes again once it reconnects.

use std::thread;
use std::time::Duration;

use log::{info, warn};

use super::{Event, LEADER_LOCK_KEY, Reporter, Role};
use crate::store::StoreError;
use crate::store::dsn::PgSettings;
use crate::store::pgerror::classify;
use crate::store::postgres::{connect_client, discard};

/// Pause between attempts at the lock, and between checks of a held one.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long the leader's check of its lock connection may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one reconnection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Tries once to take the leadership lock over `client`.
pub fn try_lead(client: &mut postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
        .map_err(|e| classify(&e))?;
    row.try_get(0).map_err(|e| classify(&e))
}

/// Runs the election for the life of the process on a thread of its own, starting
/// from `client` (already leader if `leading`).
pub fn spawn(
    config: PgSettings,
    client: postgres::Client,
    leading: bool,
    reporter: Reporter,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("election".into())
        .spawn(move || run(&config, Some(client), leading, &reporter))?;
    Ok(())
}

fn run(
    config: &PgSettings,
    mut client: Option<postgres::Client>,
    mut leading: bool,
    reporter: &Reporter,
) {
    loop {
        let Some(mut session) = client.take() else {
            match connect_client(config, CONNECT_TIMEOUT) {
                Ok(session) => client = Some(session),
                Err(_) => thread::sleep(RETRY_EVERY),
            }
            continue;
        };
        if leading {
            if let Err(e) = session.is_valid(CHECK_TIMEOUT) {
                warn!("lost the leadership lock's connection ({e}); stepping down");
                leading = false;
                if !reporter.report(Event::Role(Role::Follower)) {
                    return;
                }
                discard(session);
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
                    discard(session);
                    thread::sleep(RETRY_EVERY);
                    continue;
                }
            }
        }
        client = Some(session);
        thread::sleep(RETRY_EVERY);
    }
}
