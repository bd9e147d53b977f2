//! Who may connect: strict handshakes, allowed origins and the per-address limit,
//! against the real binary.

use crate::common;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::Server;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade request to `/api/v1/websocket` with `headers` added.
fn upgrade(headers: &str) -> String {
    format!(
        "GET /api/v1/websocket HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
}

/// Sends `request` over `stream` and reads the answer's head (status, text): an
/// upgrade's connection stays open, so nothing waits for it to close.
fn send_and_read_head(mut stream: TcpStream, request: &str) -> ((u16, String), TcpStream) {
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    ((status, text), stream)
}

/// The status and head of the answer to `request`.
fn answer_head(server: &Server, request: &str) -> (u16, String) {
    send_and_read_head(TcpStream::connect(server.addr).unwrap(), request).0
}

#[test]
fn handshakes_are_checked_as_the_rfcs_say() {
    let server = Server::start(&[]);
    let host = format!("Host: {}\r\n", server.addr);
    let (status, head) = answer_head(
        &server,
        &upgrade(&format!("{host}Sec-WebSocket-Key: {KEY}\r\n")),
    );
    assert_eq!(status, 101, "{head}");

    let no_host = server.request(&upgrade(&format!("Sec-WebSocket-Key: {KEY}\r\n")));
    assert_eq!(no_host.status, 400, "{no_host:?}");
    assert!(no_host.text().contains("Host"), "{no_host:?}");
    let plain_no_host = server.request("GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(plain_no_host.status, 400, "HTTP/1.1 without Host");
    assert_eq!(server.request("GET /health HTTP/1.0\r\n\r\n").status, 200);

    for bad_key in [
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZSBs",
        "x*xxxxxxxxxxxxxxxxxxxx==",
    ] {
        let response = server.request(&upgrade(&format!("{host}Sec-WebSocket-Key: {bad_key}\r\n")));
        assert_eq!(response.status, 400, "{bad_key}: {response:?}");
        assert!(
            response.text().contains("Sec-WebSocket-Key"),
            "{response:?}"
        );
    }

    let old = server.request(
        &upgrade(&format!("{host}Sec-WebSocket-Key: {KEY}\r\n"))
            .replace("Version: 13", "Version: 8"),
    );
    assert_eq!(old.status, 426, "{old:?}");
    assert_eq!(old.header("sec-websocket-version"), Some("13"));
}

#[test]
fn only_allowed_origins_and_the_page_itself_may_open_a_websocket() {
    let server = Server::start(&[(
        "WS_ASSETS_ALLOWED_ORIGINS",
        "https://app.example.com, http://localhost:3000",
    )]);
    let host = format!("Host: {}\r\nSec-WebSocket-Key: {KEY}\r\n", server.addr);
    let with_origin =
        |origin: &str| answer_head(&server, &upgrade(&format!("{host}Origin: {origin}\r\n"))).0;

    assert_eq!(with_origin("https://app.example.com"), 101);
    assert_eq!(with_origin("http://localhost:3000"), 101);
    let own = format!("http://{}", server.addr);
    assert_eq!(with_origin(&own), 101, "the test page's own origin");
    assert_eq!(
        answer_head(&server, &upgrade(&host)).0,
        101,
        "no Origin: not a browser"
    );

    assert_eq!(with_origin("https://evil.example"), 403);
    assert_eq!(with_origin("null"), 403);
    assert_eq!(
        server.metric_value("ws_assets_clients_dropped_total{reason=\"origin_refused\"}"),
        2.0
    );
    // Plain HTTP is not an upgrade: the origin does not matter there.
    let page = server.request("GET / HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n");
    assert_eq!(page.status, 200);
}

#[test]
fn without_a_list_every_origin_is_allowed_as_in_the_original() {
    let server = Server::start(&[]);
    let (status, head) = answer_head(
        &server,
        &upgrade(&format!(
            "Host: {}\r\nSec-WebSocket-Key: {KEY}\r\nOrigin: https://anywhere.example\r\n",
            server.addr
        )),
    );
    assert_eq!(status, 101, "{head}");
}

/// A connection from `source` (an address in 127.0.0.0/8) to `server`.
fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// Sends an upgrade over `stream` and returns the answer's status.
fn upgrade_status(stream: TcpStream, server: SocketAddr) -> (u16, TcpStream) {
    let request = upgrade(&format!("Host: {server}\r\nSec-WebSocket-Key: {KEY}\r\n"));
    let ((status, _), stream) = send_and_read_head(stream, &request);
    (status, stream)
}

#[test]
fn one_address_may_hold_only_so_many_connections() {
    let server = Server::start(&[("WS_ASSETS_MAX_CONNECTIONS_PER_IP", "2")]);
    let first = upgrade_status(connect_from([127, 0, 0, 1], server.addr), server.addr);
    let second = upgrade_status(connect_from([127, 0, 0, 1], server.addr), server.addr);
    assert_eq!((first.0, second.0), (101, 101));
    let third = upgrade_status(connect_from([127, 0, 0, 1], server.addr), server.addr);
    assert_eq!(third.0, 503, "a third from the same address");
    let other = upgrade_status(connect_from([127, 0, 0, 2], server.addr), server.addr);
    assert_eq!(other.0, 101, "another address has its own allowance");
    // A probe from the busy address is still answered.
    assert_eq!(
        server.metric_value("ws_assets_clients_dropped_total{reason=\"address_limit\"}"),
        1.0
    );
    // A slot is given back when its connection ends.
    drop(first);
    let again = common::wait_until(
        Duration::from_secs(5),
        "a freed slot",
        || match upgrade_status(connect_from([127, 0, 0, 1], server.addr), server.addr) {
            (101, stream) => Ok(stream),
            (status, _) => Err(format!("answered {status}")),
        },
    );
    drop(again);
}
