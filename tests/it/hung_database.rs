//! A database that accepts a statement and never answers (issue 12, item 4): the kernel
//! still acknowledges every byte, so no TCP timeout fires. The real server binary on the
//! real PostgreSQL, behind a proxy that swallows the write in the middle of the run, with
//! a subscribed client alongside that must miss no second.

use std::time::{Duration, Instant};

use crate::common::{Server, time_of, wait_until};
use crate::pgdb::{Proxy, TestDb};
use serde_json::Value;

/// How soon a hung write must show in `/health`: the write's deadline (5 s) plus the
/// second it may take for the next write to start and a second for the clock.
const NOTICED_WITHIN: Duration = Duration::from_secs(10);
/// Bound on anything the server should do within a few seconds.
const SOON: Duration = Duration::from_secs(30);
/// A write statement, as the proxy sees it go by.
const WRITE_STATEMENT: &str = "INSERT INTO points";
const ASSET_IDS: [i32; 5] = [1, 2, 3, 4, 5];

fn assert_consecutive(times: &[i64], what: &str) {
    for pair in times.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{what}: {} is followed by {} ({times:?})",
            pair[0],
            pair[1]
        );
    }
}

/// Waits until every asset has a stored point at each second of `from..=to`.
fn wait_stored_through(db: &TestDb, from: i64, to: i64) {
    wait_until(SOON, &format!("points {from}..={to} stored"), || {
        let times = db.stored_times();
        for id in ASSET_IDS {
            let have = times
                .get(&id)
                .map_or(0, |t| t.iter().filter(|&&s| s >= from && s <= to).count());
            if have as i64 != to - from + 1 {
                return Err(format!("asset {id}: {have} of {} seconds", to - from + 1));
            }
        }
        Ok(())
    });
}

/// The server on a throwaway database reached through a test proxy, without a backfill
/// (every stored point is a live one). Bind its fields as `db, proxy, server`, so that
/// the server is dropped (killed) first and the database last.
struct Proxied {
    server: Server,
    proxy: Proxy,
    db: TestDb,
}

impl Proxied {
    fn start() -> Proxied {
        let db = TestDb::create();
        let proxy = Proxy::start(db.server_addr());
        // dsn_via asks for no TLS, so that the proxy sees the statements go by.
        let dsn = db.dsn_via(&proxy);
        let server = Server::start(&[
            ("WS_ASSETS_POSTGRESQL_DSN", &dsn),
            ("WS_ASSETS_SIMULATED_BACKFILL", "false"),
        ]);
        Proxied { server, proxy, db }
    }

    /// Started, with a subscriber that got a live point; then the database hangs until
    /// at least `n` points wait in the write queue. Returns how many did.
    fn hung_with_points_queued(n: u64) -> (Proxied, u64) {
        let proxied = Proxied::start();
        let mut client = proxied.server.client();
        client.subscribe_history(1);
        client.recv_point();
        proxied.proxy.blackhole();
        let queued = wait_until(SOON, "points queued", || {
            let (_, health) = proxied.server.health();
            match health["store"]["queued_points"].as_u64() {
                Some(queued) if queued >= n => Ok(queued),
                other => Err(format!("{other:?}")),
            }
        });
        (proxied, queued)
    }
}

fn problems(health: &Value) -> String {
    health["problems"].to_string()
}

#[test]
fn a_database_that_hangs_mid_write_is_reported_down_within_seconds_and_loses_no_point() {
    // Bound in this order, they are dropped server first, database last.
    let Proxied {
        db,
        proxy,
        mut server,
    } = Proxied::start();
    let mut client = server.client();
    let mut seen: Vec<i64> = client.subscribe_history(1).iter().map(time_of).collect();
    seen.push(time_of(&client.recv_point()));
    let first = seen[0];
    wait_stored_through(&db, first, *seen.last().unwrap_or(&first));
    let (status, health) = server.health();
    assert_eq!(status, 200, "{health}");

    // The next write's statement is swallowed; its connection stays open, unanswered.
    proxy.blackhole_when_sent(WRITE_STATEMENT);
    let hung_at = Instant::now();
    let health = loop {
        seen.push(time_of(&client.recv_point()));
        match server.health() {
            (503, health) => break health,
            (status, health) => assert!(
                hung_at.elapsed() < NOTICED_WITHIN,
                "/health still {status} {:?} after the database hung: {health}\n{}",
                hung_at.elapsed(),
                server.log()
            ),
        }
    };
    assert_eq!(health["store"]["up"], false, "{health}");
    assert!(
        problems(&health).contains("database unreachable"),
        "{health}"
    );
    assert_eq!(server.metric("ws_assets_store_up"), Some(0.0));
    // The README's words, said while the write is still in flight (before its own 5 s
    // deadline abandons it).
    let logged = |log: &str| {
        log.lines().any(|line| {
            line.contains("store write has not finished after 3 s: the database is not answering")
        })
    };
    wait_until(Duration::from_secs(5), "the hang in the log", || {
        let log = server.log();
        if logged(&log) { Ok(()) } else { Err(log) }
    });

    // While it hangs, it stays down, and live points keep coming.
    for _ in 0..4 {
        seen.push(time_of(&client.recv_point()));
        let (status, health) = server.health();
        assert_eq!(status, 503, "{health}");
    }

    proxy.restore();
    let restored = Instant::now();
    loop {
        seen.push(time_of(&client.recv_point()));
        match server.health() {
            (200, health) => {
                assert_eq!(health["store"]["up"], true, "{health}");
                break;
            }
            (status, health) => assert!(
                restored.elapsed() < SOON,
                "/health still {status} {:?} after the database came back: {health}\n{}",
                restored.elapsed(),
                server.log()
            ),
        }
    }
    assert_consecutive(&seen, "live points across the hang");
    let last = *seen.last().unwrap_or(&first);
    wait_stored_through(&db, first, last);
    assert!(
        server.wait_for_log("store reachable again", SOON),
        "{}",
        server.log()
    );
    let stuck_lines = server.log().lines().filter(|line| logged(line)).count();
    assert!(
        stuck_lines <= 2,
        "{stuck_lines} lines about one hang:\n{}",
        server.log()
    );
    assert_eq!(server.metric("ws_assets_points_dropped_total"), Some(0.0));
    drop(client);
    let log = server.stop_and_log();
    if std::env::var("SHOW_LOG").is_ok() {
        eprintln!("{log}");
    }
}

/// How long the database hangs under the leader in the step-down test (the 25 s).
const HANG: Duration = Duration::from_secs(25);

#[test]
fn a_leader_whose_database_hangs_steps_down_and_its_subscriber_loses_no_second() {
    let Proxied {
        db: _db,
        proxy,
        server,
    } = Proxied::start();
    let role = |server: &Server| server.health().1["role"].as_str().unwrap_or("").to_string();
    assert_eq!(role(&server), "leader");
    let mut client = server.client();
    client.subscribe_history(1);
    let mut seen = vec![time_of(&client.recv_point())];

    // Every connection stays open and nothing comes back: not a cut, a hang.
    proxy.blackhole();
    let hung = Instant::now();
    while hung.elapsed() < HANG {
        seen.push(time_of(&client.recv_point()));
    }
    assert!(
        server.log().contains("stepping down"),
        "the leader stepped down during the hang:\n{}",
        server.log()
    );
    assert_eq!(role(&server), "follower");
    assert!(server.metric_value("ws_assets_fallback_polling_seconds_total") >= 15.0);

    proxy.restore();
    let restored = Instant::now();
    while role(&server) != "leader" {
        assert!(
            restored.elapsed() < SOON,
            "not leading again {:?} after the database came back:\n{}",
            restored.elapsed(),
            server.log()
        );
        seen.push(time_of(&client.recv_point()));
    }
    for _ in 0..3 {
        seen.push(time_of(&client.recv_point()));
    }
    assert_consecutive(&seen, "live points across the step-down and back");

    // The hang is reported, not repeated every second: each kind of warning at most
    // once a minute.
    let log = server.log();
    let not_answering = log
        .lines()
        .filter(|line| line.contains("is not answering"))
        .count();
    assert!(
        not_answering <= 2,
        "{not_answering} lines saying the database is not answering:\n{log}"
    );
}

#[test]
fn a_second_signal_exits_at_once_saying_how_many_points_were_not_written() {
    // Writes hang: points queue up.
    let (
        Proxied {
            db: _db,
            proxy: _proxy,
            mut server,
        },
        queued,
    ) = Proxied::hung_with_points_queued(15);
    server.terminate();
    assert!(
        server.wait_for_log("shutting down", SOON),
        "{}",
        server.log()
    );
    // The first signal waits up to 5 s for the hung write; the second does not.
    server.terminate();
    let signalled = Instant::now();
    assert_eq!(
        server.wait_exit(SOON),
        Some(1),
        "exit code 1 after a second signal:\n{}",
        server.log()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "exited {:?} after the second signal",
        signalled.elapsed()
    );
    let said = "second signal: exiting at once with ";
    assert!(
        server.wait_for_log(said, Duration::from_secs(5)),
        "{}",
        server.log()
    );
    let log = server.log();
    let not_written: u64 = log
        .lines()
        .find_map(|line| line.split_once(said))
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of points in:\n{log}"));
    // Those queued when /health was asked, and the few seconds' points until the first
    // signal (5 assets a second); none were written since.
    assert!(
        not_written >= queued && not_written <= queued + 5 * 10,
        "{not_written} points said not written; {queued} were queued before the signals"
    );
    assert!(log.contains("points not written to the store"), "{log}");
}

#[test]
fn a_stop_gives_up_on_a_hung_database_after_its_5_seconds() {
    let (
        Proxied {
            db: _db,
            proxy: _proxy,
            mut server,
        },
        _,
    ) = Proxied::hung_with_points_queued(5);
    server.terminate();
    let signalled = Instant::now();
    // The queued points cannot be written: it waits its 5 s, says so, and exits 0 without
    // waiting for the server to close the pool's connections.
    assert_eq!(
        server.wait_exit(SOON),
        Some(0),
        "a clean exit after the 5 s wait:\n{}",
        server.log()
    );
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM"
    );
    assert!(
        server.wait_for_log("points not written to the store", Duration::from_secs(5)),
        "{}",
        server.log()
    );
}
