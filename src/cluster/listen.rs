//! A follower's ear: `LISTEN` on a connection of its own, with a catch-up read of the
//! points table whenever the connection (re)starts, since `NOTIFY` has no replay.
//! Every call on the connection has a deadline, so a hung database shows as a lost
//! connection rather than silence.

use std::thread;
use std::time::Duration;

use log::{debug, info, warn};
use postgres::fallible_iterator::FallibleIterator;

use super::{Event, Reporter};
use crate::clock::epoch_second;
use crate::store::dsn::PgSettings;
use crate::store::pgerror::classify;
use crate::store::postgres::{READ_TIMEOUT, Session, connect_session, points_since};
use crate::store::publish::{self, CHANNEL};

/// Pause before reconnecting a lost listen connection.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Silence after which the connection is checked.
const CHECK_AFTER: Duration = Duration::from_secs(1);

/// How long that check, or the `LISTEN` statement, may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Listens for the leader's points for the life of the process on a thread of its own;
/// a catch-up covers `window` seconds of history.
pub fn spawn(config: PgSettings, window: u32, reporter: Reporter) -> std::io::Result<()> {
    thread::Builder::new()
        .name("listen".into())
        .spawn(move || run(&config, window, &reporter))?;
    Ok(())
}

fn run(config: &PgSettings, window: u32, reporter: &Reporter) {
    // A loss is reported once, until the connection has been up again.
    let mut loss_reported = false;
    loop {
        let why = match connect_session(config, CONNECT_TIMEOUT) {
            Ok(session) => match listen(session, window, reporter) {
                Ended::Lost { why, was_up } => {
                    loss_reported &= !was_up;
                    why
                }
                Ended::ReactorGone => return,
            },
            Err(e) => e.to_string(),
        };
        if !loss_reported {
            loss_reported = true;
            if !reporter.report(Event::ListenLost(why)) {
                return;
            }
        }
        thread::sleep(RECONNECT_EVERY);
    }
}

/// How a listen connection ended.
enum Ended {
    /// It failed; `was_up` if it had been listening.
    Lost { why: String, was_up: bool },
    /// The reactor no longer takes events.
    ReactorGone,
}

/// Listens on `session` until it fails.
fn listen(mut session: Session, window: u32, reporter: &Reporter) -> Ended {
    // Dropping the session never waits on a call still in flight.
    let lost = |session: Session, why: String, was_up: bool| {
        drop(session);
        Ended::Lost { why, was_up }
    };
    let listened = session.run(CHECK_TIMEOUT, "LISTEN", |client| {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| classify(&e))
    });
    if let Err(e) = listened {
        return lost(session, e.to_string(), false);
    }
    info!("listening for the leader's points");
    if !reporter.report(Event::Listening) {
        return Ended::ReactorGone;
    }
    // What was stored while nobody listened, before anything heard from now on.
    let since = epoch_second() - i64::from(window) + 1;
    let caught_up = session.run(READ_TIMEOUT, "the catch-up read", move |client| {
        points_since(client, since)
    });
    match caught_up {
        Ok(mut points) => {
            points.sort_by_key(|p| (p.time, p.asset_id));
            if !reporter.report(Event::CatchUp(points)) {
                return Ended::ReactorGone;
            }
        }
        Err(e) => return lost(session, e.to_string(), true),
    }
    loop {
        // Bounded by the driver itself: no request is in flight while it waits.
        let next = match session.client() {
            Ok(client) => client.notifications().timeout_iter(CHECK_AFTER).next(),
            Err(e) => return lost(session, e.to_string(), true),
        };
        match next {
            Ok(Some(notification)) => match publish::decode(notification.payload()) {
                Ok((time, points)) => {
                    if !reporter.report(Event::Notified { time, points }) {
                        return Ended::ReactorGone;
                    }
                }
                Err(e) => warn!("{e}"),
            },
            Ok(None) => {
                if let Err(e) = session.check(CHECK_TIMEOUT) {
                    debug!("listen connection check failed: {e}");
                    return lost(session, e.to_string(), true);
                }
            }
            Err(e) => return lost(session, classify(&e).to_string(), true),
        }
    }
}
