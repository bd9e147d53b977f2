//! Several instances on one PostgreSQL database: one leader polls the feed, every
//! instance streams the same points, failover loses nothing and repeats nothing.
//! Real processes, a real database (one per test), real WebSocket clients.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, Client, Server, run_to_exit, time_of, wait_until};
use crate::pgdb::{Proxy, TestDb};
use serde_json::Value;

/// A leader checks its lock connection this often (README: Several instances)...
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// ...and a check that gets no answer within this long fails: it steps down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL ends an election session silent this long, and its lock goes.
const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// A hung listen connection is replaced within this long: 1 s of silence, a 2 s check,
/// a 1 s pause, a new connection.
const LISTEN_REPLACED_WITHIN: Duration = Duration::from_secs(5);
/// Allowance for a loaded machine: the test watches through `/health`, and processes
/// sharing two cores with other builds may be scheduled late.
const MARGIN: Duration = Duration::from_secs(2);

/// Starts an instance on `dsn` with `extra` settings.
fn instance(dsn: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("WS_ASSETS_POSTGRESQL_DSN", dsn)];
    env.extend_from_slice(extra);
    Server::start(&env)
}

fn role(server: &Server) -> String {
    let (_, health) = server.health();
    health["role"].as_str().unwrap_or_default().to_string()
}

/// `(time, value)` of a point message.
fn pair(point: &Value) -> (i64, f64) {
    (time_of(point), point["value"].as_f64().expect("a number"))
}

/// The live points a client receives until `until`.
fn points_until(client: &mut Client, until: Instant) -> Vec<(i64, f64)> {
    let mut points = Vec::new();
    while Instant::now() < until {
        if let Some(message) = client.recv_within(Duration::from_millis(200))
            && message["action"] == "point"
        {
            points.push(pair(&message["message"]));
        }
    }
    points
}

fn strictly_ascending(points: &[(i64, f64)]) -> bool {
    points.windows(2).all(|w| w[0].0 < w[1].0)
}

/// The history of asset 1 as `(time, value)`.
fn history(client: &mut Client) -> Vec<(i64, f64)> {
    client.subscribe_history(1).iter().map(pair).collect()
}

#[test]
fn three_instances_stream_the_same_points_and_hold_the_same_history() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let servers: Vec<Server> = (0..3).map(|_| instance(&dsn, &[])).collect();
    let roles: Vec<String> = servers.iter().map(role).collect();
    assert_eq!(roles, ["leader", "follower", "follower"]);
    assert!(servers[1].log().contains("role: follower"));

    let mut clients: Vec<Client> = servers.iter().map(Server::client).collect();
    for client in &mut clients {
        client.subscribe_history(1);
    }
    let until = Instant::now() + Duration::from_secs(10);
    let seen: Vec<Vec<(i64, f64)>> = thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|client| scope.spawn(move || points_until(client, until)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored: BTreeMap<i64, f64> = db.stored(1).into_iter().collect();
    for (i, points) in seen.iter().enumerate() {
        assert!(
            points.len() >= 8,
            "instance {i} got {} points",
            points.len()
        );
        assert!(strictly_ascending(points), "instance {i}: {points:?}");
        for (time, value) in points {
            assert_eq!(stored.get(time), Some(value), "instance {i} at {time}");
        }
    }
    // The same seconds with the same values everywhere, and no stored second missing.
    let first = seen.iter().map(|p| p[0].0).max().unwrap();
    let last = seen.iter().map(|p| p[p.len() - 1].0).min().unwrap();
    let window = |points: &[(i64, f64)]| -> Vec<(i64, f64)> {
        points
            .iter()
            .copied()
            .filter(|(t, _)| (first..=last).contains(t))
            .collect()
    };
    let expected: Vec<(i64, f64)> = stored.range(first..=last).map(|(t, v)| (*t, *v)).collect();
    for (i, points) in seen.iter().enumerate() {
        assert_eq!(window(points), expected, "instance {i}");
    }
    let histories: Vec<Vec<(i64, f64)>> =
        servers.iter().map(|s| history(&mut s.client())).collect();
    let end = histories.iter().map(|h| h[h.len() - 1].0).min().unwrap();
    let upto = |h: &[(i64, f64)]| -> Vec<(i64, f64)> {
        h.iter().copied().filter(|(t, _)| *t <= end).collect()
    };
    assert_eq!(upto(&histories[0]), upto(&histories[1]));
    assert_eq!(upto(&histories[0]), upto(&histories[2]));
    let metrics = servers[1].metrics();
    assert!(metrics.value("ws_assets_notifications_received_total") >= 8.0);
    assert_eq!(metrics.value("ws_assets_role{role=\"follower\"}"), 1.0);
}

/// Asserts that `points` hold consecutive seconds: none missing, none twice, in order.
fn assert_every_second(points: &[(i64, f64)], what: &str) {
    for pair in points.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "{what}: {points:?}");
    }
}

#[test]
fn a_killed_leader_is_replaced_at_once_and_costs_at_most_the_second_in_progress() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let mut servers: Vec<Server> = (0..3).map(|_| instance(&dsn, &[])).collect();
    assert_eq!(role(&servers[0]), "leader");
    let mut watchers: Vec<Client> = servers[1..].iter().map(Server::client).collect();
    let mut seen: Vec<Vec<(i64, f64)>> = Vec::new();
    for watcher in &mut watchers {
        watcher.subscribe_history(1);
        seen.push(vec![pair(&watcher.recv_point())]);
    }

    let kill_began = common::epoch_now();
    servers[0].kill();
    let killed = Instant::now();
    let in_progress = kill_began..=common::epoch_now();
    // The followers wait on the lock: the one that gets it says so at once.
    let took = loop {
        if servers[1..].iter().any(|s| role(s) == "leader") {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no new leader 10 s after the kill"
        );
        thread::sleep(Duration::from_millis(5));
    };
    eprintln!("a new leader {took:?} after the kill (as seen through /health)");

    for (watcher, points) in watchers.iter_mut().zip(&mut seen) {
        while points[points.len() - 1].0 < in_progress.end() + 3 {
            points.push(pair(&watcher.recv_point()));
        }
        assert!(strictly_ascending(points), "none twice: {points:?}");
        // Only the second of the kill may be missing: the dead leader may have fetched
        // it without storing it, and nobody polls it again.
        let missing: Vec<i64> = (points[0].0..=points[points.len() - 1].0)
            .filter(|t| !points.iter().any(|(seen, _)| seen == t))
            .collect();
        assert!(
            missing.is_empty() || (missing.len() == 1 && in_progress.contains(&missing[0])),
            "missing {missing:?}, the kill was in {in_progress:?}: {points:?}"
        );
    }
    let stored: BTreeMap<i64, f64> = db.stored(1).into_iter().collect();
    for points in &seen {
        for (time, value) in points {
            assert_eq!(stored.get(time), Some(value), "as stored, at {time}");
        }
    }
    let new_leader = servers[1..].iter().find(|s| role(s) == "leader").unwrap();
    assert!(new_leader.metric_value("ws_assets_leader_changes_total") >= 1.0);
    assert!(new_leader.log().contains("role: leader"));
}

#[test]
fn a_stalled_leader_is_replaced_and_one_leader_remains() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let servers: Vec<Server> = (0..3).map(|_| instance(&dsn, &[])).collect();
    assert_eq!(role(&servers[0]), "leader");
    let mut watchers: Vec<Client> = servers[1..].iter().map(Server::client).collect();
    for watcher in &mut watchers {
        watcher.subscribe_history(1);
        watcher.recv_point();
    }

    // A stopped process checks nothing: the server ends its session after
    // idle_session_timeout, and a follower, waiting for the lock, has it at once.
    servers[0].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let took = wait_until(Duration::from_secs(10), "a new leader", || {
        let leaders = servers[1..].iter().filter(|s| role(s) == "leader").count();
        match leaders {
            1 => Ok(stopped.elapsed()),
            n => Err(format!("{n} leaders")),
        }
    });
    eprintln!("a new leader {took:?} after the leader stopped");
    assert!(
        took <= IDLE_SESSION_TIMEOUT + MARGIN,
        "a new leader after {took:?}"
    );
    // The seconds of the stall have no points (nobody polled them); from the takeover on,
    // every second comes.
    let taken_over = common::epoch_now();
    let until = Instant::now() + Duration::from_secs(3);
    let seen: Vec<Vec<(i64, f64)>> = thread::scope(|scope| {
        let handles: Vec<_> = watchers
            .iter_mut()
            .map(|watcher| scope.spawn(move || points_until(watcher, until)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for points in &seen {
        assert!(strictly_ascending(points), "{points:?}");
        let after: Vec<(i64, f64)> = points
            .iter()
            .copied()
            .filter(|(t, _)| *t > taken_over)
            .collect();
        assert!(after.len() >= 2, "points from the new leader: {points:?}");
        assert_every_second(&after, "after the takeover");
    }

    // Resumed, it finds its session ended and steps down: one leader.
    servers[0].signal(libc::SIGCONT);
    wait_until(
        Duration::from_secs(10),
        "the old leader a follower",
        || match role(&servers[0]).as_str() {
            "follower" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    let roles: Vec<String> = servers.iter().map(role).collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    // Every follower follows the new leader, the old one included.
    for (i, server) in servers.iter().enumerate() {
        if role(server) == "leader" {
            continue;
        }
        let before = server.metric_value("ws_assets_notifications_received_total");
        wait_until(Duration::from_secs(10), "notifications", || {
            let now = server.metric_value("ws_assets_notifications_received_total");
            if now > before {
                Ok(())
            } else {
                Err(format!("instance {i}: {now}"))
            }
        });
    }
}

#[test]
fn a_leader_whose_connection_silently_stops_answering_is_replaced() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    let leader = instance(&db.dsn_via(&proxy), &[]);
    assert_eq!(role(&leader), "leader");
    let follower = instance(&db.dsn(), &[]);
    assert_eq!(role(&follower), "follower");
    let mut on_leader = leader.client();
    on_leader.subscribe_history(1);
    let mut seen = vec![pair(&on_leader.recv_point())];

    // Like a host that vanished: nothing answers, nothing is closed.
    proxy.blackhole();
    let hung = Instant::now();
    let (mut stepped_down, mut replaced) = (None, None);
    while stepped_down.is_none() || replaced.is_none() {
        assert!(
            hung.elapsed() < Duration::from_secs(15),
            "stepped down after {stepped_down:?}, replaced after {replaced:?}\n{}",
            leader.log()
        );
        if stepped_down.is_none() && role(&leader) == "follower" {
            stepped_down = Some(hung.elapsed());
        }
        if replaced.is_none() && role(&follower) == "leader" {
            replaced = Some(hung.elapsed());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let (stepped_down, replaced) = (stepped_down.unwrap(), replaced.unwrap());
    eprintln!("stepped down after {stepped_down:?}; replaced after {replaced:?}");
    // Its check every second fails within 2 s.
    assert!(stepped_down <= CHECK_EVERY + CHECK_TIMEOUT + MARGIN);
    // The server ends its silent session after idle_session_timeout.
    assert!(replaced <= IDLE_SESSION_TIMEOUT + MARGIN);
    assert!(
        leader
            .log()
            .contains("lost the leadership lock's connection")
    );

    // The old leader's clients missed no second: it polls on alone, cut off.
    seen.extend(points_until(
        &mut on_leader,
        Instant::now() + Duration::from_secs(3),
    ));
    assert_every_second(&seen, "the old leader's client across the hang");
    assert!(leader.metric_value("ws_assets_fallback_polling_seconds_total") >= 1.0);
    drop(proxy);
}

#[test]
fn a_follower_whose_listen_connection_hangs_replaces_it() {
    let db = TestDb::create();
    let _leader = instance(&db.dsn(), &[]);
    let proxy = Proxy::start(db.server_addr());
    let follower = instance(&db.dsn_via(&proxy), &[]);
    assert_eq!(role(&follower), "follower");
    assert!(follower.wait_for_log("listening for the leader's points", Duration::from_secs(10)));
    let mut watcher = follower.client();
    watcher.subscribe_history(1);
    let mut seen = vec![pair(&watcher.recv_point())];

    // Its connections stop answering but stay open; new ones work.
    proxy.hang_open();
    let hung = Instant::now();
    let replaced = wait_until(Duration::from_secs(20), "listening again", || {
        let lost = follower.log_count("not listening for the leader's points");
        let listening = follower.log_count("listening for the leader's points") - lost;
        if lost >= 1 && listening >= 2 {
            Ok(hung.elapsed())
        } else {
            Err(format!("{lost} lost, {listening} listening"))
        }
    });
    eprintln!("listen connection replaced {replaced:?} after it hung");
    // Silent for 1 s, then a check that gets 2 s, then a new connection after 1 s.
    assert!(replaced <= LISTEN_REPLACED_WITHIN + MARGIN, "{replaced:?}");
    let (_, health) = follower.health();
    assert_eq!(health["listening"], true, "{health}");

    // The leader's points come again; nothing came twice or out of order meanwhile.
    let before = follower.metric_value("ws_assets_notifications_received_total");
    seen.extend(points_until(
        &mut watcher,
        Instant::now() + Duration::from_secs(3),
    ));
    assert!(follower.metric_value("ws_assets_notifications_received_total") > before);
    assert!(strictly_ascending(&seen), "{seen:?}");
    // What it did not hear while the connection hung, it read back: its history is the
    // table's.
    let history = history(&mut follower.client());
    let (first, last) = (history[0].0, history[history.len() - 1].0);
    let stored: Vec<(i64, f64)> = db
        .stored(1)
        .into_iter()
        .filter(|(t, _)| (first..=last).contains(t))
        .collect();
    assert_eq!(history, stored, "{}", follower.log());
    drop(proxy);
}

#[test]
fn a_follower_cut_off_from_the_database_keeps_streaming_and_catches_up() {
    let db = TestDb::create();
    let leader = instance(&db.dsn(), &[]);
    let proxy = Proxy::start(db.server_addr());
    let follower = instance(&db.dsn_via(&proxy), &[]);
    assert_eq!(role(&follower), "follower");
    let mut watcher = follower.client();
    watcher.subscribe_history(1);
    watcher.recv_point();

    proxy.cut();
    let until = Instant::now() + Duration::from_secs(10);
    let during = points_until(&mut watcher, until);
    proxy.restore();
    assert!(strictly_ascending(&during), "{during:?}");
    // The fallback begins 3 s into the cut: the rest of it has points.
    assert!(
        during.len() >= 5,
        "{} points in a 10 s cut: {during:?}",
        during.len()
    );
    assert!(follower.metric_value("ws_assets_fallback_polling_seconds_total") >= 3.0);

    // Back: it listens again, catches up, and its history is the table's.
    wait_until(Duration::from_secs(15), "listening again", || {
        let (_, health) = follower.health();
        if health["listening"] == true {
            Ok(())
        } else {
            Err(health.to_string())
        }
    });
    let after = points_until(&mut watcher, Instant::now() + Duration::from_secs(3));
    let mut all = during.clone();
    all.extend(&after);
    assert!(
        strictly_ascending(&all),
        "nothing twice across the return: {all:?}"
    );
    let history = history(&mut follower.client());
    let stored: BTreeMap<i64, f64> = db.stored(1).into_iter().collect();
    let (first, last) = (history[0].0, history[history.len() - 1].0);
    let expected: Vec<(i64, f64)> = stored.range(first..=last).map(|(t, v)| (*t, *v)).collect();
    let differ: Vec<String> = history
        .iter()
        .filter(|p| !expected.contains(p))
        .map(|p| format!("history {p:?}"))
        .chain(
            expected
                .iter()
                .filter(|p| !history.contains(p))
                .map(|p| format!("table {p:?}")),
        )
        .collect();
    assert!(
        differ.is_empty(),
        "the follower's history differs from the table ({} points from {first} to {last}): {differ:?}\n{}",
        history.len(),
        follower.log()
    );
    drop(leader);
}

#[test]
fn instances_share_a_port_only_when_asked() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let shared = [("WS_ASSETS_REUSE_PORT", "TRUE")];
    let a = Server::start_on(port, &shared);
    let b = Server::start_on(port, &shared);
    assert!(b.log().contains("port shared"));
    let clients: Vec<Client> = (0..40).map(|_| a.client()).collect();
    // Both listen on the one port, so ask each process's log, not its /metrics.
    let served = |s: &Server| s.log_count("upgraded to WebSocket") as f64;
    // The log is written by a thread of its own: wait for the last lines.
    let (on_a, on_b) = wait_until(Duration::from_secs(5), "every upgrade logged", || {
        let (on_a, on_b) = (served(&a), served(&b));
        if on_a + on_b == 40.0 {
            Ok((on_a, on_b))
        } else {
            Err(format!("{on_a} + {on_b}"))
        }
    });
    assert!(on_a > 0.0 && on_b > 0.0, "both serve: {on_a} and {on_b}");
    drop(clients);

    let alone = Server::start(&[]);
    let run = run_to_exit(
        &[],
        &[("WS_ASSETS_PORT", &alone.addr.port().to_string())],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("Address already in use"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_resume_after_five_seconds_gets_exactly_the_missing_seconds() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let _leader = instance(&dsn, &[]);
    let follower = instance(&dsn, &[]);
    let mut client = follower.client();
    client.subscribe_history(1);
    let last = time_of(&client.recv_point());
    drop(client);
    thread::sleep(Duration::from_secs(5));

    let mut again = follower.client();
    again.send_text(&format!(
        r#"{{"action":"subscribe","message":{{"assetId":1,"since":{last}}}}}"#
    ));
    let resumed = again.recv_action("asset_history");
    let times: Vec<i64> = resumed["message"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(time_of)
        .collect();
    assert!(times.len() >= 4, "{times:?}");
    let expected: Vec<i64> = (last + 1..last + 1 + times.len() as i64).collect();
    assert_eq!(times, expected, "exactly the seconds after {last}");
    let next = time_of(&again.recv_point());
    assert_eq!(next, times[times.len() - 1] + 1, "the usual seam");
}

#[test]
fn a_client_resuming_on_a_follower_that_is_behind_gets_no_second_twice() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let leader = instance(&dsn, &[]);
    let follower = instance(&dsn, &[]);
    let mut on_leader = leader.client();
    on_leader.subscribe_history(1);
    on_leader.recv_point();
    // The leader's client gets a second before the follower has heard it (the
    // notification goes through the database); it moves to the follower at once and
    // resumes. Several rounds, so that it lands in that window.
    for _ in 0..5 {
        let last = time_of(&on_leader.recv_point());
        let mut moved = follower.client();
        moved.send_text(&format!(
            r#"{{"action":"subscribe","message":{{"assetId":1,"since":{last}}}}}"#
        ));
        let history = moved.recv_action("asset_history");
        let mut times: Vec<i64> = history["message"]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(time_of)
            .collect();
        times.push(time_of(&moved.recv_point()));
        times.push(time_of(&moved.recv_point()));
        let expected: Vec<i64> = (last + 1..).take(times.len()).collect();
        assert_eq!(
            times, expected,
            "after {last}: the next seconds, none it has"
        );
    }
}
