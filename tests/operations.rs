//! Operations: the health probe, Prometheus metrics and graceful shutdown.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn health_reports_ok_with_its_fields() {
    let server = Server::start(&[]);
    let _client = server.client();
    // The first live tick sets last_tick; poll until it has happened.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let (status, body) = server.get("/health");
        assert_eq!(status, 200, "{body}");
        let health: Value = serde_json::from_str(&body).unwrap();
        if health["feed"]["last_tick"].is_i64() || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.get("/health");
        if status == 503 {
            let health: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(health["status"], "unavailable");
            let problems = health["problems"].to_string();
            assert!(problems.contains("no quote recorded"), "{problems}");
            break;
        }
        assert!(Instant::now() < deadline, "still {status}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Serving goes on regardless.
    let mut client = server.client();
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(client.recv()["action"], "assets");
}

/// Parses Prometheus text: every line is a comment or `name{labels} value`, and every
/// sample belongs to a family declared with `# HELP` and `# TYPE`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut helped = Vec::new();
    let mut typed = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            typed.push(name);
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("ws_assets_"), "{name}");
            if let Some(labels) = series.strip_prefix(name)
                && !labels.is_empty()
            {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.iter().any(|t| t == f))
                })
                .unwrap_or(name);
            assert!(typed.iter().any(|t| t == family), "no # TYPE for {line}");
            assert!(helped.iter().any(|h| h == family), "no # HELP for {line}");
            samples.insert(series.to_string(), value);
        }
    }
    samples
}

#[test]
fn metrics_parse_and_move_with_clients() {
    let server = Server::start(&[]);
    let (status, before) = server.get("/metrics");
    assert_eq!(status, 200);
    let before = parse_metrics(&before);
    let mut client = server.client();
    client.subscribe_history(3);
    client.recv_action("point");
    client.send_text("nonsense");
    client.recv_action("error");
    let (_, after) = server.get("/metrics");
    let after = parse_metrics(&after);
    let moved = |key: &str| after[key] - before.get(key).copied().unwrap_or(0.0);
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
    let mut stubborn = std::net::TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(
        &mut stubborn,
        b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    assert!(server.wait_for_log("upgraded to WebSocket", Duration::from_secs(10)));
    server.terminate();
    assert!(server.wait_for_log("shutting down", Duration::from_secs(10)));
    server.terminate();
    assert_eq!(server.wait_exit(Duration::from_secs(2)), Some(1));
    assert!(server.log().contains("second signal"));
}
