//! Several instances on one PostgreSQL database: one leader polls the feed, every
//! instance streams the same points, failover loses nothing and repeats nothing.
//! Real processes, a real database (one per test), real WebSocket clients.

use crate::common;
use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Client, Server, run_to_exit, time_of, wait_until};
use crate::pgdb::{Proxy, TestDb};
use serde_json::Value;

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

#[test]
fn when_the_leader_is_killed_a_follower_takes_over_within_3_seconds() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let mut servers: Vec<Server> = (0..3).map(|_| instance(&dsn, &[])).collect();
    assert_eq!(role(&servers[0]), "leader");
    let mut watchers: Vec<Client> = servers[1..].iter().map(Server::client).collect();
    for watcher in &mut watchers {
        watcher.subscribe_history(1);
        watcher.recv_point();
    }

    servers[0].kill();
    let killed = Instant::now();
    let took = wait_until(Duration::from_secs(10), "a new leader", || {
        let leaders = servers[1..].iter().filter(|s| role(s) == "leader").count();
        match leaders {
            1 => Ok(killed.elapsed()),
            n => Err(format!("{n} leaders")),
        }
    });
    eprintln!("takeover after {took:?}");
    assert!(took <= Duration::from_secs(3), "takeover took {took:?}");

    let until = Instant::now() + Duration::from_secs(4);
    for watcher in &mut watchers {
        let points = points_until(watcher, until.max(Instant::now() + Duration::from_secs(1)));
        assert!(points.len() >= 2, "{points:?}");
        assert!(
            strictly_ascending(&points),
            "no duplicate, no second out of order: {points:?}"
        );
    }
    let new_leader = servers[1..].iter().find(|s| role(s) == "leader").unwrap();
    assert!(new_leader.metric_value("ws_assets_leader_changes_total") >= 1.0);
    assert!(new_leader.log().contains("role: leader"));
}

#[test]
fn a_stalled_leader_does_not_stop_the_stream_and_one_leader_remains() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let servers: Vec<Server> = (0..3).map(|_| instance(&dsn, &[])).collect();
    assert_eq!(role(&servers[0]), "leader");
    let mut watchers: Vec<Client> = servers[1..].iter().map(Server::client).collect();
    for watcher in &mut watchers {
        watcher.subscribe_history(1);
        watcher.recv_point();
    }

    servers[0].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let until = stopped + Duration::from_secs(6);
    let seen: Vec<Vec<(i64, f64)>> = thread::scope(|scope| {
        let handles: Vec<_> = watchers
            .iter_mut()
            .map(|watcher| scope.spawn(move || points_until(watcher, until)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    servers[0].signal(libc::SIGCONT);
    for points in &seen {
        assert!(strictly_ascending(points), "{points:?}");
        // Fallback starts 3 s after the last point heard: the last seconds have points.
        let late = points
            .iter()
            .filter(|(t, _)| *t >= common::epoch_now() - 3)
            .count();
        assert!(
            late >= 1,
            "points kept coming while the leader was stopped: {points:?}"
        );
    }
    assert!(servers[1].metric_value("ws_assets_fallback_polling_seconds_total") >= 1.0);

    wait_until(Duration::from_secs(10), "exactly one leader", || {
        let roles: Vec<String> = servers.iter().map(role).collect();
        match roles.iter().filter(|r| *r == "leader").count() {
            1 => Ok(()),
            n => Err(format!("{n} leaders: {roles:?}")),
        }
    });
    thread::sleep(Duration::from_secs(2));
    let roles: Vec<String> = servers.iter().map(role).collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    // Followers follow again: points from the leader, no fallback.
    for server in &servers[1..] {
        let before = server.metric_value("ws_assets_notifications_received_total");
        wait_until(Duration::from_secs(5), "notifications again", || {
            let now = server.metric_value("ws_assets_notifications_received_total");
            if now > before {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        });
    }
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
