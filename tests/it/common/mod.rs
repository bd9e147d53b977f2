//! The harness of the black-box tests: the real server binary on a free port, a real
//! WebSocket client, plain HTTP, raw frames for what a well-behaved client never sends,
//! and `/metrics` read as Prometheus text.
//!
//! - [`Server`] starts the binary (`start`, `start_on`), reads its log, signals it and
//!   stops it; [`run_to_exit`] runs it to its end (refused start-ups, `migrate`).
//! - [`Client`] speaks WebSocket through tungstenite; [`raw_websocket`], [`masked_frame`]
//!   and [`read_until_closed`] work below it.
//! - [`http_exchange`] sends one raw request and reports whether the server closed.
//! - [`Metrics`] is one `/metrics` answer, checked for format as it is parsed.
//! - [`tls_connect`], [`https_get`] and `Client::connect_tls` speak TLS (`https://`,
//!   `wss://`) with a client that trusts the test's authority (`testca`).
//! - [`wait_until`] polls for an event with a deadline, for what has no event to block on.
//! - [`assert_seconds_follow`] checks a stream of points for one per second, allowing
//!   only the seconds the server itself counted as having no point.
//!
//! Shared by every test crate, each using part of it.

mod http;
mod metrics;
mod process;
mod server;
mod tls;
mod websocket;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use http::{http_exchange, http_request, try_http_exchange};
// The type `Server::metrics` returns, for tests that name it.
#[allow(unused_imports)]
pub use metrics::Metrics;
pub use process::{Exited, drain_lines, run_command, run_to_exit};
pub use server::{Server, listening_addr};
pub use tls::{TlsSocket, https_exchange, https_get, tls_connect, try_tls_connect};
pub use websocket::{
    Client, Ended, masked_frame, masked_text, raw_websocket, read_until_closed, server_frames,
    time_of, upgrade_by_hand,
};

/// Polls `probe` every 100 ms until it answers `Ok`, and returns that; panics with the
/// last `Err` once `within` has passed. For states with no event to wait on (a row in a
/// table, a value in `/metrics`).
pub fn wait_until<T>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let why = match probe() {
            Ok(value) => return value,
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {within:?}; last seen: {why}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails the test unless `times` (of one asset's points, in the order received) strictly
/// increase one second apart, except for seconds without a point, at most `allowed` of
/// them in all: the ticks the server counted as recording none
/// ([`Server::ticks_without_point`], read after the points). So a lost or repeated
/// point fails, and a tick the loaded machine made the server miss does not.
pub fn assert_seconds_follow(times: &[i64], allowed: u64, what: &str) {
    let mut gaps = 0;
    for pair in times.windows(2) {
        assert!(
            pair[1] > pair[0],
            "{what}: {} came after {}: a repeat or a step back in {times:?}",
            pair[1],
            pair[0]
        );
        gaps += (pair[1] - pair[0] - 1) as u64;
    }
    assert!(
        gaps <= allowed,
        "{what}: {gaps} seconds without a point in {times:?}, but the server counted only \
         {allowed} ticks without one"
    );
}

/// The current Unix time in whole seconds.
pub fn epoch_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
