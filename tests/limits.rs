//! Limits that protect the service and its other clients: message size, slow
//! consumers, ping timeouts, handshake deadlines and the connection cap.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Server, time_of};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A client that completes the handshake by hand and then does nothing unless told.
fn raw_websocket(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(
            b"GET /api/v1/websocket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

/// A masked client text frame carrying `payload`.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 65535 {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [1u8, 2, 3, 4];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads until EOF; returns whether it came within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Checks that `client` keeps receiving consecutive live points.
fn keeps_receiving(client: &mut Client, points: usize) {
    let mut last = None;
    for _ in 0..points {
        let point = client.recv_action("point");
        let time = time_of(&point["message"]);
        if let Some(last) = last {
            assert_eq!(time, last + 1);
        }
        last = Some(time);
    }
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

    keeps_receiving(&mut bystander, 2);
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
    let mut hog = raw_websocket(&server);
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
    keeps_receiving(&mut bystander, 2);
    // Reading now, the hog finds the close frame (1008) after what was already sent.
    let mut hog = Client {
        ws: tungstenite::WebSocket::from_raw_socket(hog, tungstenite::protocol::Role::Client, None),
    };
    hog.ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let code = loop {
        match hog.ws.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| f.code),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Policy));
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("ws_assets_clients_dropped_total{reason=\"slow_consumer\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_client_that_ignores_pings_is_dropped_and_one_that_answers_is_kept() {
    let server = Server::start(&[
        ("WS_ASSETS_PING_INTERVAL_SECONDS", "1"),
        ("WS_ASSETS_PONG_TIMEOUT_SECONDS", "1"),
    ]);
    let mut silent = raw_websocket(&server);
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
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "a client that never answers is dropped"
    );
    lively.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(lively.recv_action("assets")["action"], "assets");
}

#[test]
fn subscribers_get_pings_with_their_points_and_are_dropped_if_they_never_answer() {
    let server = Server::start(&[
        ("WS_ASSETS_PING_INTERVAL_SECONDS", "1"),
        ("WS_ASSETS_PONG_TIMEOUT_SECONDS", "2"),
    ]);
    let mut silent = raw_websocket(&server);
    silent
        .write_all(&masked_text(
            br#"{"action":"subscribe","message":{"assetId":1}}"#,
        ))
        .unwrap();
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
    assert!(closed_within(&mut silent, Duration::from_secs(10)));
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("ws_assets_clients_dropped_total{reason=\"pong_timeout\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_flooding_client_neither_stalls_others_nor_grows_without_bound() {
    let server = Server::start(&[("WS_ASSETS_CLIENT_QUEUE_BYTES", "65536")]);
    let mut bystander = server.client();
    bystander.subscribe_history(3);
    let mut flood = raw_websocket(&server);
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
    keeps_receiving(&mut bystander, 3);
    let closed = flooder.join().unwrap();
    assert!(closed, "a client that floods and never reads is closed");
    assert!(server.log().contains("slow consumer"), "{}", server.log());
    keeps_receiving(&mut bystander, 1);
}

#[test]
fn an_unfinished_request_head_is_dropped_after_the_handshake_timeout() {
    let server = Server::start(&[("WS_ASSETS_HANDSHAKE_TIMEOUT_SECONDS", "1")]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(10)));
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get("/health").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "slots are freed when clients leave"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let server = Server::start(&[]);
    let mut stream = raw_websocket(&server);
    stream.write_all(&masked_text(&[0xff, 0xfe, b'{'])).unwrap();
    let mut client = Client {
        ws: tungstenite::WebSocket::from_raw_socket(
            stream,
            tungstenite::protocol::Role::Client,
            None,
        ),
    };
    assert_eq!(client.recv_close(), Some(CloseCode::Invalid));
}
