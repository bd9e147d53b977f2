//! Limits that protect the service and its other clients: message size, frames that
//! break the protocol, slow consumers, ping timeouts, handshake deadlines and the
//! connection cap.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{
    Client, Ended, Server, assert_seconds_follow, masked_frame, masked_text, read_until_closed,
    server_frames, time_of, try_http_exchange, wait_until,
};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// The opcode of a ping frame.
const PING: u8 = 0x9;

/// Checks that `client` keeps receiving consecutive live points (a second the server
/// counted as without a point aside).
fn keeps_receiving(server: &Server, client: &mut Client, points: usize) {
    let times: Vec<i64> = (0..points)
        .map(|_| time_of(&client.recv_action("point")["message"]))
        .collect();
    assert_seconds_follow(
        &times,
        server.ticks_without_point(),
        "the bystander's points",
    );
}

#[test]
fn an_oversized_message_closes_only_that_client_with_1009() {
    let server = Server::start(&[("WS_ASSETS_MAX_MESSAGE_BYTES", "1024")]);
    let mut bystander = server.client();
    bystander.subscribe_history(1);

    let mut offender = server.client();
    let big = format!(
        r#"{{"action":"assets","message":{{"pad":"{}"}}}}"#,
        "x".repeat(5000)
    );
    offender.send_text(&big);
    assert_eq!(offender.recv_close(), Some(CloseCode::Size));

    keeps_receiving(&server, &mut bystander, 2);
    bystander.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(bystander.recv_action("assets")["action"], "assets");
}

#[test]
fn a_message_just_under_the_limit_is_served() {
    let server = Server::start(&[("WS_ASSETS_MAX_MESSAGE_BYTES", "1024")]);
    let mut client = server.client();
    let padded = format!(
        r#"{{"action":"assets","message":{{"pad":"{}"}}}}"#,
        "x".repeat(900)
    );
    client.send_text(&padded);
    assert_eq!(client.recv()["action"], "assets");
}

#[test]
fn a_client_that_never_reads_is_dropped_as_a_slow_consumer() {
    let server = Server::start(&[("WS_ASSETS_CLIENT_QUEUE_BYTES", "262144")]);
    let mut bystander = server.client();
    bystander.subscribe_history(2);

    // Each subscribe queues a full history (~100 KB); never reading, the client's
    // kernel buffers fill and then the server's queue passes the limit.
    let mut hog = server.raw_websocket();
    let subscribe = masked_text(br#"{"action":"subscribe","message":{"assetId":1}}"#);
    for _ in 0..400 {
        if hog.write_all(&subscribe).is_err() {
            break;
        }
    }
    assert!(
        server.wait_for_log("slow consumer", Duration::from_secs(10)),
        "server log:\n{}",
        server.log()
    );
    keeps_receiving(&server, &mut bystander, 2);
    // Reading now, the hog finds the close frame (1008) after what was already sent.
    let mut hog = Client::from_raw(hog);
    assert_eq!(hog.recv_close(), Some(CloseCode::Policy));
    assert_eq!(
        server.metric_value(r#"ws_assets_clients_dropped_total{reason="slow_consumer"}"#),
        1.0
    );
}

#[test]
fn a_client_that_ignores_pings_is_dropped_and_one_that_answers_is_kept() {
    let server = Server::start(&[
        ("WS_ASSETS_PING_INTERVAL_SECONDS", "1"),
        ("WS_ASSETS_PONG_TIMEOUT_SECONDS", "1"),
    ]);
    let connecting = Instant::now();
    let silent = server.raw_websocket();
    let silent = watch_until_closed(silent, connecting);
    let mut lively = server.client();
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(4) {
        // Reading answers pings automatically (tungstenite queues the pong).
        if let Ok(Message::Ping(_)) = lively.ws.read() {
            pings += 1;
            lively.ws.flush().unwrap();
        }
    }
    assert!(pings >= 1, "the server pings quiet clients");
    let ended = silent
        .join()
        .unwrap()
        .expect("a client that never answers is dropped");
    assert_dropped_for_silence(&server, &ended, Duration::from_secs(1 + 1));
    lively.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(lively.recv_action("assets")["action"], "assets");
}

#[test]
fn subscribers_get_pings_with_their_points_and_are_dropped_if_they_never_answer() {
    let server = Server::start(&[
        ("WS_ASSETS_PING_INTERVAL_SECONDS", "1"),
        ("WS_ASSETS_PONG_TIMEOUT_SECONDS", "2"),
    ]);
    let connecting = Instant::now();
    let mut silent = server.raw_websocket();
    silent
        .write_all(&masked_text(
            br#"{"action":"subscribe","message":{"assetId":1}}"#,
        ))
        .unwrap();
    let silent = watch_until_closed(silent, connecting);
    let mut lively = server.client();
    lively.subscribe_history(1);
    let started = Instant::now();
    let (mut pings, mut points) = (0, 0);
    while started.elapsed() < Duration::from_secs(5) {
        match lively.ws.read().unwrap() {
            Message::Ping(_) => {
                pings += 1;
                lively.ws.flush().unwrap();
            }
            Message::Text(_) => points += 1,
            _ => {}
        }
    }
    assert!(pings >= 2, "{pings} pings");
    assert!(
        points >= 4,
        "{points} points: an answering subscriber keeps receiving"
    );
    let ended = silent
        .join()
        .unwrap()
        .expect("a subscriber that never answers is dropped");
    assert_dropped_for_silence(&server, &ended, Duration::from_secs(1 + 2));
}

/// Reads a raw client's connection on a thread until the server ends it (at most 15 s
/// after `since`), as a client that reads but never answers a ping.
fn watch_until_closed(
    mut stream: TcpStream,
    since: Instant,
) -> std::thread::JoinHandle<Option<Ended>> {
    std::thread::spawn(move || read_until_closed(&mut stream, since, Duration::from_secs(15)))
}

/// Checks that a client was dropped for not answering a ping: it was pinged, it was not
/// dropped before `at_least` (the ping interval plus the pong timeout) had passed since
/// it connected, and the drop is counted as a pong timeout.
fn assert_dropped_for_silence(server: &Server, ended: &Ended, at_least: Duration) {
    let frames = server_frames(&ended.bytes);
    assert!(
        frames.iter().any(|f| f.opcode == PING),
        "dropped without a ping first: {frames:?}"
    );
    assert!(
        ended.after >= at_least,
        "dropped {:?} after connecting, before the ping interval and pong timeout ({at_least:?}) had passed",
        ended.after
    );
    assert_eq!(
        server.metric_value(r#"ws_assets_clients_dropped_total{reason="pong_timeout"}"#),
        1.0
    );
}

#[test]
fn a_flooding_client_neither_stalls_others_nor_grows_without_bound() {
    let server = Server::start(&[("WS_ASSETS_CLIENT_QUEUE_BYTES", "65536")]);
    let mut bystander = server.client();
    bystander.subscribe_history(3);
    let mut flood = server.raw_websocket();
    let ping = {
        // A masked ping with a 4-byte payload.
        let mut frame = vec![0x89, 0x84, 9, 9, 9, 9];
        frame.extend([b'p' ^ 9, b'i' ^ 9, b'n' ^ 9, b'g' ^ 9]);
        frame
    };
    let request = masked_text(br#"{"action":"assets","message":{}}"#);
    let batch: Vec<u8> = (0..200)
        .flat_map(|_| [&ping[..], &request[..]].concat())
        .collect();
    let flooder = std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            if flood.write_all(&batch).is_err() {
                return true; // closed by the server
            }
        }
        false
    });
    keeps_receiving(&server, &mut bystander, 3);
    let closed = flooder.join().unwrap();
    assert!(closed, "a client that floods and never reads is closed");
    assert!(server.log().contains("slow consumer"), "{}", server.log());
    keeps_receiving(&server, &mut bystander, 1);
}

#[test]
fn an_unfinished_request_head_is_dropped_after_the_handshake_timeout() {
    let server = Server::start(&[("WS_ASSETS_HANDSHAKE_TIMEOUT_SECONDS", "1")]);
    let connecting = Instant::now();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let ended = read_until_closed(&mut stream, connecting, Duration::from_secs(10))
        .expect("an unfinished head is dropped");
    assert!(
        ended.after >= Duration::from_secs(1),
        "dropped {:?} after connecting, before the 1 s handshake timeout",
        ended.after
    );
    assert_eq!(
        server.metric_value(r#"ws_assets_clients_dropped_total{reason="handshake_timeout"}"#),
        1.0
    );
}

#[test]
fn connections_over_the_limit_are_turned_away_and_others_keep_working() {
    let server = Server::start(&[("WS_ASSETS_MAX_CONNECTIONS", "3")]);
    let mut kept: Vec<Client> = (0..3).map(|_| server.client()).collect();
    // A fourth client is turned away...
    let (status, body) = server.http(
        "GET /api/v1/websocket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection limit"));
    // ...while the probes, served from a small reserve, tell the truth: a full server
    // is a healthy one.
    let (status, body) = server.get("/health");
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/metrics").0, 200);
    for client in &mut kept {
        client.send_text(r#"{"action":"assets","message":{}}"#);
        assert_eq!(client.recv()["action"], "assets");
    }
    drop(kept);
    wait_until(
        Duration::from_secs(10),
        "slots are freed when clients leave",
        || match server.get("/health") {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        },
    );
}

#[test]
fn health_is_answered_through_a_connection_storm_at_the_limit() {
    let server = Server::start(&[("WS_ASSETS_MAX_CONNECTIONS", "200")]);
    let mut held: Vec<Client> = (0..200)
        .map(|i| {
            let mut client = server.client();
            client.subscribe_history(1 + i % 5);
            client
        })
        .collect();
    // The storm: 1,000 more connections over about 2 s; half send nothing, half send
    // an upgrade request and never read the answer.
    let addr = server.addr;
    let storm = std::thread::spawn(move || {
        let mut open = Vec::new();
        for i in 0..1000 {
            let Ok(mut stream) = TcpStream::connect(addr) else {
                continue;
            };
            if i % 2 == 1 {
                let _ = stream.write_all(
                    b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                );
            }
            open.push(stream);
            std::thread::sleep(Duration::from_millis(2));
        }
        open
    });
    // Through it, an orchestrator's probe is answered, healthy, within a second.
    let mut probes = 0;
    while !storm.is_finished() || probes < 8 {
        let asked = Instant::now();
        let probe = try_http_exchange(
            addr,
            b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n",
            Duration::from_secs(1),
        )
        .expect("the probe connects");
        assert_eq!(
            probe.status, 200,
            "probe {probes} during the storm: {probe:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "probe {probes} took {:?}",
            asked.elapsed()
        );
        probes += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    let storm = storm.join().unwrap();
    // The clients holding the slots kept receiving their points, every second.
    for client in &mut held {
        keeps_receiving(&server, client, 3);
    }
    drop(storm);
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let server = Server::start(&[]);
    let mut stream = server.raw_websocket();
    stream.write_all(&masked_text(&[0xff, 0xfe, b'{'])).unwrap();
    let mut client = Client::from_raw(stream);
    assert_eq!(client.recv_close(), Some(CloseCode::Invalid));
}

#[test]
fn a_protocol_violation_closes_only_that_client_with_1002() {
    let server = Server::start(&[]);
    let mut bystander = server.client();
    bystander.subscribe_history(1);
    let request = br#"{"action":"assets","message":{}}"#;
    let unmasked = [&[0x81, request.len() as u8][..], &request[..]].concat();
    let violations = [
        ("an unmasked frame", unmasked),
        ("a reserved bit set", masked_frame(0x81 | 0x40, request)),
        ("a reserved opcode", masked_frame(0x83, request)),
        (
            "a continuation with nothing to continue",
            masked_frame(0x80, request),
        ),
        ("a fragmented ping", masked_frame(0x09, b"ping")),
    ];
    for (what, bytes) in &violations {
        let mut stream = server.raw_websocket();
        stream.write_all(bytes).unwrap();
        let mut offender = Client::from_raw(stream);
        assert_eq!(offender.recv_close(), Some(CloseCode::Protocol), "{what}");
    }
    keeps_receiving(&server, &mut bystander, 2);
    bystander.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(bystander.recv_action("assets")["action"], "assets");
    assert_eq!(
        server.metric_value(r#"ws_assets_clients_dropped_total{reason="protocol_error"}"#),
        violations.len() as f64
    );
}
