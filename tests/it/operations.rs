//! Operations: the health probe, Prometheus metrics and graceful shutdown.

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::common::{Server, try_http_exchange, wait_until};
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn health_reports_ok_with_its_fields() {
    let server = Server::start(&[]);
    let mut client = server.client();
    // The first live tick sets last_tick.
    client.subscribe_history(1);
    client.recv_point();
    let (status, health) = server.health();
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert!(health["uptime_seconds"].is_u64());
    assert!(health["clients"].as_u64().unwrap() >= 1);
    assert_eq!(health["store"]["kind"], "memory");
    assert_eq!(health["store"]["up"], true);
    assert_eq!(health["feed"]["source"], "simulated");
    assert!(health["feed"]["last_tick"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(health["problems"], serde_json::json!([]));
}

#[test]
fn health_is_503_while_the_feed_records_nothing() {
    // A feed URL nobody answers on: every tick fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/rates", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::start(&[
        ("WS_ASSETS_RATES_URL", &url),
        ("WS_ASSETS_HEALTH_MAX_TICK_AGE_SECONDS", "1"),
    ]);
    let health = wait_until(Duration::from_secs(10), "/health 503", || {
        match server.health() {
            (503, health) => Ok(health),
            (status, health) => Err(format!("{status} {health}")),
        }
    });
    assert_eq!(health["status"], "unavailable");
    let problems = health["problems"].to_string();
    assert!(problems.contains("no quote recorded"), "{problems}");
    // Serving goes on regardless.
    let mut client = server.client();
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(client.recv()["action"], "assets");
}

#[test]
fn metrics_parse_and_move_with_clients() {
    let server = Server::start(&[]);
    let before = server.metrics();
    let mut client = server.client();
    client.subscribe_history(3);
    client.recv_action("point");
    client.send_text("nonsense");
    client.recv_action("error");
    let after = server.metrics();
    let moved = |key: &str| after.moved_since(&before, key);
    assert!(moved("ws_assets_connections_total") >= 1.0);
    assert!(
        moved("ws_assets_messages_sent_total") >= 3.0,
        "history, point, error"
    );
    assert!(
        moved("ws_assets_sent_bytes_total") > 10_000.0,
        "a history was sent"
    );
    assert_eq!(moved("ws_assets_requests_total{action=\"subscribe\"}"), 1.0);
    assert_eq!(
        moved("ws_assets_request_errors_total{error_type=\"ParseError\"}"),
        1.0
    );
    assert_eq!(after["ws_assets_subscriptions{asset=\"GBPUSD\"}"], 1.0);
    assert!(moved("ws_assets_ticks_total{outcome=\"ok\"}") >= 1.0);
    assert!(after["ws_assets_feed_fetch_duration_seconds_count"] >= 1.0);
    assert!(
        after["ws_assets_connections"] >= 2.0,
        "the client and this request"
    );
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut server = Server::start(&[]);
    let mut clients: Vec<_> = (0..5).map(|_| server.client()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.subscribe_history(1 + i as i64);
    }
    server.terminate();
    for client in &mut clients {
        assert_eq!(client.recv_close(), Some(CloseCode::Away));
    }
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(server.log().contains("shutting down"));
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = Server::start(&[]);
    // A client that never completes the close handshake keeps the first shutdown waiting.
    let _stubborn = server.raw_websocket();
    server.terminate();
    assert!(server.wait_for_log("shutting down", Duration::from_secs(10)));
    server.terminate();
    assert_eq!(server.wait_exit(Duration::from_secs(2)), Some(1));
    assert!(server.log().contains("second signal"));
}

#[test]
fn sigint_closes_every_client_with_1001_and_exits_0() {
    let mut server = Server::start(&[]);
    let mut clients: Vec<_> = (0..3).map(|_| server.client()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.subscribe_history(1 + i as i64);
    }
    server.interrupt();
    for client in &mut clients {
        assert_eq!(client.recv_close(), Some(CloseCode::Away));
    }
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn health_is_503_while_shutting_down() {
    let server = Server::start(&[]);
    // A client that never answers the close keeps the shutdown going for seconds.
    let _stubborn = server.raw_websocket();
    server.terminate();
    assert!(server.wait_for_log("shutting down", Duration::from_secs(10)));
    let asked = Instant::now();
    let probe = try_http_exchange(
        server.addr,
        b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the probe was answered only after {:?}; the shutdown may have ended",
        asked.elapsed()
    );
    let response = probe.unwrap_or_else(|e| panic!("/health during the shutdown: {e}"));
    assert_eq!(response.status, 503, "{response:?}");
    let health: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(health["status"], "unavailable");
    assert!(
        health["problems"].to_string().contains("shutting down"),
        "{health}"
    );
}

/// The soft open-file limit the server is started with in the test below: far below the
/// hard limit, as the 1024 of many systems is.
const LOW_SOFT_LIMIT: libc::rlim_t = 256;

#[test]
fn the_open_file_limit_is_raised_to_its_hard_limit_at_start_up() {
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    assert!(
        hard.rlim_max > LOW_SOFT_LIMIT,
        "the hard limit {} leaves nothing to raise",
        hard.rlim_max
    );
    // More connections asked for than the hard limit allows: start-up says what it serves.
    let server =
        Server::start_with_command(&[("WS_ASSETS_MAX_CONNECTIONS", "10000000")], |command| {
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // setrlimit, which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let lowered = libc::rlimit {
                        rlim_cur: LOW_SOFT_LIMIT,
                        rlim_max: hard.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))
        .expect("read the server's /proc limits");
    let open_files: Vec<u64> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits")
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(
        open_files,
        [hard.rlim_max, hard.rlim_max],
        "soft and hard limit of the server:\n{limits}"
    );
    assert!(
        server
            .log()
            .contains(&format!("open-file limit is {}", hard.rlim_max)),
        "{}",
        server.log()
    );
}
