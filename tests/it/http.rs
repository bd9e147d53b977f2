//! Plain HTTP on the WebSocket port.

use std::time::Duration;

use crate::common::{Server, http_exchange, http_request};

#[test]
fn the_page_is_served_on_root_and_404_when_the_ui_is_off() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
    let off = Server::start(&[("WS_ASSETS_ENABLE_UI", "false")]);
    assert_eq!(off.get("/").0, 404);
}

#[test]
fn unknown_paths_methods_and_garbage() {
    let server = Server::start(&[]);
    assert_eq!(server.get("/nothing-here").0, 404);
    assert_eq!(server.get("/static/missing.js").0, 404);
    let (status, _) = server.http("POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _) = http_request(server.addr, "\x16\x03\x01 garbage\r\n\r\n");
    assert_eq!(status, 400);
    let (status, _) = server.get("/api/v1/websocket");
    assert_eq!(
        status, 426,
        "a plain GET on the WebSocket path asks for an upgrade"
    );
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http_request(server.addr, &huge).0, 431);
    // After all that, the service still answers.
    assert_eq!(server.get("/").0, 200);
}

#[test]
fn head_requests_get_headers_only() {
    let server = Server::start(&[]);
    let (status, body) = server.http("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.is_empty());
}

#[test]
fn a_bad_upgrade_is_answered_400() {
    let server = Server::start(&[]);
    let (status, body) = server.http(
        "GET /api/v1/websocket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(status, 400);
    assert!(body.contains("Sec-WebSocket-Key"), "{body}");
}

#[test]
fn every_http_response_closes_its_connection() {
    let server = Server::start(&[]);
    let huge_head = format!(
        "GET / HTTP/1.1\r\nConnection: keep-alive\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let requests = [
        ("GET /", 200),
        ("HEAD /", 200),
        ("GET /health", 200),
        ("GET /metrics", 200),
        ("GET /nothing-here", 404),
        ("POST /health", 405),
        ("GET /api/v1/websocket", 426),
    ]
    .map(|(line, status)| {
        let request = format!(
            "{line} HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        );
        (request, status)
    });
    let malformed = [
        ("\x16\x03\x01 garbage\r\n\r\n".to_string(), 400),
        (huge_head, 431),
        (
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
                .to_string(),
            400,
        ),
    ];
    for (request, status) in requests.iter().chain(&malformed) {
        let response = http_exchange(server.addr, request.as_bytes(), Duration::from_secs(5));
        let line = request.lines().next().unwrap_or_default();
        assert_eq!(response.status, *status, "{line}: {response:?}");
        assert!(
            response.closed,
            "{line}: the connection is still open 5 s after the response"
        );
        assert_eq!(
            response.header("connection"),
            Some("close"),
            "{line}: {}",
            response.head
        );
    }

    // At the connection limit: a probe is answered from the reserve and a client turned
    // away with a 503, and both connections are closed too.
    let full = Server::start(&[("WS_ASSETS_MAX_CONNECTIONS", "1")]);
    let _only = full.client();
    let probe = http_exchange(
        full.addr,
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(probe.status, 200, "{probe:?}");
    assert!(
        probe.closed,
        "the probe's answer leaves its connection open"
    );
    let response = http_exchange(
        full.addr,
        b"GET /api/v1/websocket HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.closed, "the 503 leaves its connection open");
}
