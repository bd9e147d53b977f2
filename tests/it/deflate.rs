//! permessage-deflate (RFC 7692) on the wire: what is negotiated, what a compressing
//! client receives (the same history as a plain client, compressed; points plain), what
//! it may send compressed, and how each broken compressed frame closes the connection.
//! A raw client written here says every byte; the real libraries are in `interop`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{Server, masked_frame, time_of};

/// The answer the service gives an offer it accepts.
const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// What every compressed message ends with before RFC 7692 §7.2.1 strips it.
const TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];

/// A connection upgraded by hand with `offer` as its `Sec-WebSocket-Extensions` (none
/// for `None`); returns it with the `101`'s head.
fn upgrade(addr: SocketAddr, offer: Option<&str>) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let extension = offer
        .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /api/v1/websocket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extension}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    (stream, head)
}

/// The extension the `101` named, if any.
fn negotiated(head: &str) -> Option<&str> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim())
    })
}

/// One whole server frame: its first byte (FIN, RSV1, opcode) and payload.
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7F {
        126 => {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).unwrap();
            u64::from(u16::from_be_bytes(len))
        }
        127 => {
            let mut len = [0u8; 8];
            stream.read_exact(&mut len).unwrap();
            u64::from_be_bytes(len)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

/// The next text message as JSON, inflated if it came compressed; with whether it did
/// and its size on the wire.
fn read_message(stream: &mut TcpStream) -> (Value, bool, usize) {
    loop {
        let (first, payload) = read_frame(stream);
        assert_eq!(first & 0x80, 0x80, "server messages are never fragmented");
        match first & 0x0F {
            0x1 => {
                let compressed = first & 0x40 != 0;
                let text = if compressed {
                    inflate(&payload)
                } else {
                    payload.clone()
                };
                return (
                    serde_json::from_slice(&text).unwrap(),
                    compressed,
                    payload.len(),
                );
            }
            0x9 | 0xA => continue,
            other => panic!("opcode {other} where a message was expected"),
        }
    }
}

/// Inflates a message compressed without context takeover (RFC 7692 §7.2.2).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(payload.len() * 20 + 1024);
    let input = [payload, &TAIL].concat();
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(
        inflater.total_in() as usize,
        input.len(),
        "output room ran out"
    );
    out
}

/// `payload` compressed as a client compresses a message (RFC 7692 §7.2.1).
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut deflater = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    deflater
        .compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

fn subscribe_text(asset_id: i64) -> Vec<u8> {
    format!(r#"{{"action":"subscribe","message":{{"assetId":{asset_id}}}}}"#).into_bytes()
}

/// The close code of the connection's last frame, once the server has closed it.
fn close_code(stream: &mut TcpStream) -> CloseCode {
    loop {
        let (first, payload) = read_frame(stream);
        if first & 0x0F == 0x8 {
            return CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[test]
fn a_compressing_client_gets_the_plain_clients_history_compressed_then_plain_points() {
    let server = Server::start(&[]);
    let (mut compressing, head) = upgrade(
        server.addr,
        Some("permessage-deflate; client_max_window_bits"),
    );
    assert_eq!(negotiated(&head), Some(ACCEPTED));
    let (mut plain, head) = upgrade(server.addr, None);
    assert_eq!(negotiated(&head), None, "no offer, no extension");
    let before = server.metrics();
    // Both subscribe, the compressing one with its request compressed, until both
    // histories are of one second.
    let (history, reference, wire) = loop {
        compressing
            .write_all(&masked_frame(0xC1, &deflate(&subscribe_text(1))))
            .unwrap();
        plain
            .write_all(&masked_frame(0x81, &subscribe_text(1)))
            .unwrap();
        let (history, compressed, wire) = read_message(&mut compressing);
        let (reference, plain_compressed, _) = read_message(&mut plain);
        assert!(compressed && !plain_compressed);
        let last = |h: &Value| {
            h["message"]["points"]
                .as_array()
                .unwrap()
                .last()
                .map(time_of)
        };
        if last(&history) == last(&reference) {
            break (history, reference, wire);
        }
    };
    assert_eq!(
        history, reference,
        "the same history, whichever way it travelled"
    );
    let json_len = serde_json::to_vec(&reference).unwrap().len();
    assert!(
        wire * 100 <= json_len * 12,
        "{wire} bytes on the wire for {json_len} of JSON"
    );
    // The seam holds; points are small and go out plain.
    let last = time_of(
        history["message"]["points"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
    );
    let (point, compressed, _) = read_message(&mut compressing);
    assert_eq!(point["action"], "point");
    assert_eq!(time_of(&point["message"]), last + 1);
    assert!(
        !compressed,
        "a point is below WS_ASSETS_COMPRESSION_MIN_BYTES"
    );
    let after = server.metrics();
    assert!(after.moved_since(&before, "ws_assets_messages_inflated_total") >= 1.0);
    assert!(
        after.moved_since(
            &before,
            "ws_assets_message_bytes_total{encoding=\"deflate\"}"
        ) > 0.0
    );
    assert_eq!(after.value("ws_assets_deflate_connections"), 1.0);
}

#[test]
fn offers_are_accepted_or_declined_and_the_handshake_always_succeeds() {
    let server = Server::start(&[]);
    for (offer, accepted) in [
        ("permessage-deflate", true),
        (
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=15",
            true,
        ),
        (
            "x-unknown, permessage-deflate; server_max_window_bits=9, permessage-deflate",
            true,
        ),
        ("permessage-deflate; server_max_window_bits=9", false),
        ("permessage-deflate; mystery_parameter", false),
        ("permessage-deflate; client_max_window_bits=99", false),
        ("permessage-deflate;;", false),
        ("x-webkit-deflate-frame", false),
    ] {
        let (_, head) = upgrade(server.addr, Some(offer));
        let expected = accepted.then_some(ACCEPTED);
        assert_eq!(negotiated(&head), expected, "{offer}");
    }
    let off = Server::start(&[("WS_ASSETS_COMPRESSION", "false")]);
    let (_, head) = upgrade(off.addr, Some("permessage-deflate"));
    assert_eq!(
        negotiated(&head),
        None,
        "WS_ASSETS_COMPRESSION=false turns it off"
    );
}

#[test]
fn a_client_that_offers_nothing_gets_the_original_bytes() {
    let server = Server::start(&[("WS_ASSETS_COMPRESSION_MIN_BYTES", "0")]);
    let (mut plain, head) = upgrade(server.addr, None);
    assert!(!head.to_ascii_lowercase().contains("extensions"), "{head}");
    plain
        .write_all(&masked_frame(0x81, &subscribe_text(2)))
        .unwrap();
    for _ in 0..3 {
        let (first, _) = read_frame(&mut plain);
        assert!(
            first == 0x81 || first & 0x0F >= 0x8,
            "a plain final frame: {first:#x}"
        );
    }
}

#[test]
fn broken_compressed_frames_close_with_the_rfc_codes() {
    let server = Server::start(&[]);
    let offer = Some("permessage-deflate");
    let request = subscribe_text(1);
    let bomb = deflate(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096, "a small frame that inflates to 1 MiB");
    let cases: [(Option<&str>, Vec<u8>, CloseCode); 6] = [
        (
            None,
            masked_frame(0xC1, &deflate(&request)),
            CloseCode::Protocol,
        ),
        (
            offer,
            masked_frame(0xC1, &[0xFF, 0xFE, 0xFD]),
            CloseCode::Invalid,
        ),
        (offer, masked_frame(0xC1, &bomb), CloseCode::Size),
        (
            offer,
            masked_frame(0xC1, &deflate(b"\xFF\xFE")),
            CloseCode::Invalid,
        ),
        (offer, masked_frame(0xC9, b""), CloseCode::Protocol),
        (
            offer,
            [masked_frame(0x41, &deflate(b"{")), masked_frame(0xC0, b"")].concat(),
            CloseCode::Protocol,
        ),
    ];
    let before = server.metrics();
    for (offer, bytes, code) in cases {
        let (mut stream, _) = upgrade(server.addr, offer);
        stream.write_all(&bytes).unwrap();
        assert_eq!(
            close_code(&mut stream),
            code,
            "{offer:?} {:02x?}",
            &bytes[..2]
        );
    }
    let after = server.metrics();
    let failures = |reason: &str| {
        after.moved_since(
            &before,
            &format!("ws_assets_inflate_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(failures("invalid"), 1.0);
    assert_eq!(failures("too_large"), 1.0);
    // A bystander that negotiated it too was not disturbed.
    let (mut bystander, _) = upgrade(server.addr, offer);
    bystander
        .write_all(&masked_frame(0xC1, &deflate(&request)))
        .unwrap();
    let (history, compressed, _) = read_message(&mut bystander);
    assert_eq!(history["action"], "asset_history");
    assert!(compressed);
}
