//! The oracle for one whole client connection: arbitrary bytes through the real
//! connection driver ([`Conn`]), its steps called as the reactor calls them.

use std::io::Cursor;
use std::time::Duration;

use serde_json::Value;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use crate::config::Config;
use crate::conn::{Conn, MemoryPeer, MemoryService, OpsOnly};
use crate::deflate::{Compressor, Inflater};
use crate::http;

/// The upgrade of [`drive_compressed`]: it offers permessage-deflate.
const DEFLATE_UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// Runs one connection on `data`: the first byte picks settings, the second seeds the
/// client's pace, the rest is what the client sends, a chunk a round. Each round the
/// connection is read (and read again past its budget) and flushed, and sometimes ticked
/// or swept. Checked: no panic, reads within budget, a bounded queue, no write after
/// shutdown, and the client gets one HTTP response or the `101` and valid frames (protocol
/// JSON; its asset's points in order; allowed close codes). Returns what it got.
/// Settings bits: 1 the page on, 2 origins limited, 4 messages of 64 bytes at most, 8 the
/// smallest client queue, 16 a slow reader, 32 a tick every round, 64 the client never
/// closes, 128 a connection beyond the limit (probes only).
pub fn drive_connection(data: &[u8]) -> Vec<u8> {
    match data {
        [flags, seed, input @ ..] => run(*flags, *seed, input.to_vec()),
        _ => Vec::new(),
    }
}

/// A connection that negotiated permessage-deflate: settings and seed as
/// [`drive_connection`], then text frames of `[kind, length, bytes]`; kind bit 1
/// compresses the bytes (RSV1 on a first frame), 2 sets RSV1 anyway, 4 leaves FIN off, 8
/// makes a continuation.
pub fn drive_compressed(data: &[u8]) -> Vec<u8> {
    let [flags, seed, rest @ ..] = data else {
        return Vec::new();
    };
    let (mut rest, mut input, mut compressor) =
        (rest, DEFLATE_UPGRADE.to_vec(), Compressor::new(1));
    while let [kind, len, tail @ ..] = rest {
        let bytes;
        (bytes, rest) = tail.split_at(usize::from(*len).min(tail.len()));
        let payload = match kind & 1 {
            1 => compressor.compress(bytes),
            _ => bytes.to_vec(),
        };
        let continuation = kind & 8 != 0;
        // Masked with a key of zeros: the payload goes out as it is.
        let header = FrameHeader {
            is_final: kind & 4 == 0,
            rsv1: kind & 2 != 0 || (kind & 1 != 0 && !continuation),
            mask: Some([0; 4]),
            opcode: OpCode::from(u8::from(!continuation)),
            ..FrameHeader::default()
        };
        let _ = header.format(payload.len() as u64, &mut input);
        input.extend_from_slice(&payload);
    }
    run(flags & !128, *seed, input)
}

fn run(flags: u8, seed: u8, input: Vec<u8>) -> Vec<u8> {
    let config = Config::from_lookup(|name| match name.strip_prefix("WS_ASSETS_")? {
        "ENABLE_UI" => Some((flags & 1 != 0).to_string()),
        "ALLOWED_ORIGINS" if flags & 2 != 0 => Some("https://app.example.com".into()),
        "MAX_MESSAGE_BYTES" if flags & 4 != 0 => Some("64".into()),
        "CLIENT_QUEUE_BYTES" if flags & 8 != 0 => Some("4096".into()),
        _ => None,
    })
    .expect("a valid configuration");
    let (mut service, slow) = (MemoryService::new(config), flags & 16 != 0);
    for _ in 0..seed % 48 {
        service.tick();
    }
    // The client sends and makes room round by round.
    let mut peer = MemoryPeer::sending(&input);
    (peer.sent, peer.room, peer.closes) = (0, 0, flags & 64 == 0);
    let now = service.now;
    let mut conn = Conn::new(peer, now, now + service.config.handshake_timeout);
    conn.ops_only = (flags & 128 != 0).then_some(OpsOnly::Full);
    let mut rng = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n) as usize
    };
    let mut rounds_after_input = 0;
    for _ in 0..4096 {
        let peer = conn.stream_mut();
        let r = [random(16), random(512), random(8192)];
        let chunk = [1, 1 + r[0], 1 + r[1], 1 + r[2], usize::MAX][random(5)];
        peer.sent = peer.sent.saturating_add(chunk).min(peer.input.len());
        peer.room += if slow { random(300) } else { 1 << 20 };
        service.now += Duration::from_millis(10);
        let now = service.now;
        // As the reactor: read, answer a probe, resume a read that used up its budget.
        let mut dooms = Vec::new();
        for _ in 0..2 {
            let step = conn.on_readable(0, &mut service.cx());
            if let Some((_, head_only)) = step.probe {
                let body = http::response(200, "application/json", "", b"{}", head_only);
                let _ = conn.respond(0, body, now, &mut service.metrics);
            }
            dooms.push(step.doom);
            if !step.more_to_read {
                break;
            }
        }
        // A turn reads at most its budget of 16 KiB, after at most one request head.
        assert!(std::mem::take(&mut conn.stream_mut().read_in_turn) <= 16_384 + 8_193);
        let _ = conn.flush();
        if flags & 32 != 0 || random(4) == 0 {
            for (index, frame) in service.tick() {
                let market = &service.market;
                if market.recipients(index, service.second).contains(&0) {
                    dooms.push(conn.send_point(&frame, now, &service.config).1);
                }
            }
        }
        let (config, market) = (&service.config, &mut service.market);
        if random(16) == 0 {
            dooms.push(conn.sweep(now, config, market.is_subscribed(0)).1);
        }
        for doom in dooms.into_iter().flatten() {
            if conn.end(0, doom, market, now) {
                return check_output(conn, false);
            }
        }
        let queued = conn.backlog();
        assert!(queued <= config.client_queue_bytes + 1024, "{queued}");
        let peer = conn.stream_mut();
        rounds_after_input += usize::from(peer.sent == peer.input.len());
        if rounds_after_input > 8 {
            break;
        }
    }
    check_output(conn, true)
}

/// Checks what the client received; a connection still open writes the rest first.
fn check_output(mut conn: Conn<MemoryPeer>, open: bool) -> Vec<u8> {
    if open {
        conn.stream_mut().room = usize::MAX / 2;
        let _ = conn.flush();
    }
    let complete = conn.is_drained();
    let out = std::mem::take(&mut conn.stream_mut().written);
    match response_len(&out) {
        Some((101, head)) => check_frames(&out[head..], complete),
        Some((status, len)) => {
            let listed = matches!(status, 200 | 400 | 403 | 404 | 405 | 426 | 431 | 503);
            assert!(listed, "a status the README does not list: {status}");
            assert!(out.len() == len || !complete, "bytes after the response");
        }
        None => assert!(!complete || out.is_empty(), "an incomplete head: {out:?}"),
    }
    out
}

/// The status of the response at the start of `bytes` and its length with its body
/// (`Content-Length`, none for `101` or an answer to `HEAD`), once its head is complete.
fn response_len(bytes: &[u8]) -> Option<(u16, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(bytes).expect("a response") else {
        return None;
    };
    let status = response.code.filter(|_| response.version == Some(1));
    let status = status.expect("an HTTP/1.1 status");
    let is_length = |h: &&httparse::Header| h.name.eq_ignore_ascii_case("content-length");
    let Some(length) = response.headers.iter().find(is_length) else {
        assert_eq!(status, 101, "a {status} without Content-Length");
        return Some((status, head));
    };
    let body = String::from_utf8_lossy(length.value).parse::<usize>();
    let body = body.expect("a numeric Content-Length");
    // A `HEAD` answer says the length of the body it does not carry.
    let carried = bytes.len() > head;
    Some((status, if carried { head + body } else { head }))
}

/// Server frames: unmasked and final, text (protocol JSON, inflated if RSV1 says it is
/// compressed) or control within its size, and nothing after an allowed close.
fn check_frames(mut bytes: &[u8], complete: bool) {
    let (mut subscribed, mut inflater) = (None, Inflater::default());
    while !bytes.is_empty() {
        let mut cursor = Cursor::new(bytes);
        let header = FrameHeader::parse(&mut cursor).ok().flatten();
        let start = cursor.position() as usize;
        let frame = header.and_then(|(h, len)| Some((h, bytes.get(start..start + len as usize)?)));
        let Some((header, payload)) = frame else {
            return assert!(!complete, "a frame cut short");
        };
        bytes = &bytes[start + payload.len()..];
        assert!(header.is_final && header.mask.is_none() && !header.rsv2 && !header.rsv3);
        match header.opcode {
            OpCode::Data(Data::Text) => {
                let text = match header.rsv1 {
                    true => inflater.inflate(payload, 1 << 24).expect("it inflates"),
                    false => payload,
                };
                check_message(std::str::from_utf8(text).expect("UTF-8"), &mut subscribed);
            }
            OpCode::Control(Control::Close) => {
                assert!(bytes.is_empty(), "bytes after a close frame");
                if let [high, low, reason @ ..] = payload {
                    let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
                    assert!(code.is_allowed() && std::str::from_utf8(reason).is_ok());
                }
            }
            OpCode::Control(Control::Ping | Control::Pong) => assert!(payload.len() <= 125),
            other => panic!("a server frame with opcode {other:?}"),
        }
    }
}

/// A protocol message; a point must be of the subscribed asset and after the last.
fn check_message(text: &str, subscribed: &mut Option<(Option<i64>, i64)>) {
    let value: Value = serde_json::from_str(text).expect("messages are JSON");
    let message = &value["message"];
    assert!(message.is_object(), "{text}");
    let points = match value["action"].as_str() {
        Some("assets" | "error") => return,
        Some("unsubscribed") => return *subscribed = None,
        Some("asset_history") => {
            *subscribed = Some((None, i64::MIN));
            let points = message["points"].as_array();
            points.expect("points").iter().collect()
        }
        Some("point") => vec![message],
        other => panic!("unknown action {other:?}"),
    };
    let (asset, last) = subscribed.as_mut().expect("a point with a subscription");
    for point in points {
        let id = point["assetId"].as_i64().expect("id");
        let time = point["time"].as_i64().expect("time");
        assert!(asset.is_none_or(|a| a == id) && time > *last, "{text}");
        (*asset, *last) = (Some(id), time);
    }
}
