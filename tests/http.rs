//! Plain HTTP on the WebSocket port.

mod common;

use common::{Server, http_request};

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
