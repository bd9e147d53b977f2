//! The oracle for one whole client connection: arbitrary bytes through the real
//! connection driver ([`Conn`]), its steps called as the reactor calls them.

use std::io::Cursor;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use crate::asset::{Point, default_assets};
use crate::config::Config;
use crate::conn::{Conn, Context, MemoryPeer, OpsOnly, Shared};
use crate::deflate::{Compressor, Inflater};
use crate::http;
use crate::market::Market;
use crate::metrics::Metrics;

use super::parsers::response_len;

/// The upgrade of [`drive_compressed`]: it offers permessage-deflate.
const DEFLATE_UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// Runs one connection on `data`: the first byte picks settings, the second seeds the
/// client's pace, the rest is what the client sends. Each round the client sends a
/// chunk and reads some output; the connection gets a readable and a writable event,
/// a resumed read if its budget ran out, and sometimes a tick or the sweep. Checked: no
/// panic, a turn's reads within budget, a bounded queue, nothing written after the write
/// side is shut, and the client gets one HTTP response, or the `101` and server frames
/// that are valid (protocol JSON; points of its asset only, in order; allowed close
/// codes).
///
/// Settings bits: 1 the page on, 2 origins limited, 4 messages of 64 bytes at most, 8 the
/// smallest client queue, 16 a slow reader, 32 a tick every round, 64 the client never
/// closes, 128 a connection beyond the limit (probes only).
pub fn drive_connection(data: &[u8]) {
    if let [flags, seed, input @ ..] = data {
        run(*flags, *seed, input.to_vec());
    }
}

/// A connection that negotiated permessage-deflate sending messages built from `data`:
/// settings and seed as [`drive_connection`], then pieces of `[kind, length, bytes]`,
/// each a masked text frame; kind bit 1 compresses its bytes (valid DEFLATE; RSV1 on a
/// first frame), bit 2 sets RSV1 anyway, bit 4 leaves FIN off, bit 8 makes it a
/// continuation.
pub fn drive_compressed(data: &[u8]) {
    if let Some((flags, seed, input)) = compressed_input(data) {
        run(flags, seed, input);
    }
}

/// The settings, seed and client bytes of [`drive_compressed`].
pub(super) fn compressed_input(data: &[u8]) -> Option<(u8, u8, Vec<u8>)> {
    let [flags, seed, rest @ ..] = data else {
        return None;
    };
    let mut rest = rest;
    let (mut input, mut compressor) = (DEFLATE_UPGRADE.to_vec(), Compressor::new(1));
    while let [kind, len, tail @ ..] = rest {
        let (bytes, after) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = after;
        let frame = compressor.text_frame(bytes);
        let payload = match kind & 1 {
            1 => &frame[2 + usize::from(frame[1] == 126) * 2..],
            _ => bytes,
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
        input.extend_from_slice(payload);
    }
    Some((flags & !128, *seed, input))
}

/// Drives the connection; returns what the client received.
pub(super) fn run(flags: u8, seed: u8, input: Vec<u8>) -> Vec<u8> {
    let config = Config::from_lookup(|name| match name.strip_prefix("WS_ASSETS_")? {
        "ENABLE_UI" => Some((flags & 1 != 0).to_string()),
        "ALLOWED_ORIGINS" if flags & 2 != 0 => Some("https://app.example.com".into()),
        "MAX_MESSAGE_BYTES" if flags & 4 != 0 => Some("64".into()),
        "CLIENT_QUEUE_BYTES" if flags & 8 != 0 => Some("4096".into()),
        _ => None,
    })
    .expect("a valid configuration");
    let mut market = Market::new(default_assets(), config.history_seconds);
    let (mut metrics, mut shared) = (Metrics::default(), Shared::new(&config));
    let (mut now, mut second) = (Instant::now(), 1_700_000_000);
    for _ in 0..seed % 48 {
        tick(&mut market, &mut second);
    }
    // The client sends and makes room round by round.
    let peer = MemoryPeer {
        sent: 0,
        room: 0,
        closes: flags & 64 == 0,
        ..MemoryPeer::sending(&input)
    };
    let mut conn = Conn::new(peer, now, now + config.handshake_timeout);
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
        let chunk = [
            1,
            1 + random(16),
            1 + random(512),
            1 + random(8192),
            usize::MAX,
        ][random(5)];
        peer.sent = peer.sent.saturating_add(chunk).min(peer.input.len());
        peer.room += if flags & 16 != 0 {
            random(300)
        } else {
            1 << 20
        };
        now += Duration::from_millis(10);
        let cx = &mut Context {
            config: &config,
            market: &mut market,
            metrics: &mut metrics,
            shared: &mut shared,
            now,
        };
        // As the reactor: read, answer a probe, resume a read that used up its budget.
        let mut dooms = Vec::new();
        for _ in 0..2 {
            let step = conn.on_readable(0, cx);
            if let Some((_, head_only)) = step.probe {
                let body = http::response(200, "application/json", "", b"{}", head_only);
                let _ = conn.respond(0, body, now, cx.metrics);
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
            for (index, frame) in tick(cx.market, &mut second) {
                if cx.market.subscribers(index).contains(&0) {
                    dooms.push(conn.send_point(&frame, now, &config).1);
                }
            }
        }
        if random(16) == 0 {
            dooms.push(conn.sweep(now, &config, cx.market.is_subscribed(0)).1);
        }
        for doom in dooms.into_iter().flatten() {
            if conn.end(0, doom, cx.market, now) {
                return check_output(conn, false);
            }
        }
        let queued = conn.backlog();
        assert!(
            queued <= config.client_queue_bytes + 1024,
            "a queue of {queued} bytes"
        );
        let peer = conn.stream_mut();
        rounds_after_input += usize::from(peer.sent == peer.input.len());
        if rounds_after_input > 8 {
            break;
        }
    }
    check_output(conn, true)
}

/// Records a point of every asset at `second` and moves on; returns their frames.
fn tick(market: &mut Market, second: &mut i64) -> Vec<(usize, bytes::Bytes)> {
    *second += 1;
    (1..=5)
        .filter_map(|asset_id| {
            let value = 1.0 + f64::from(asset_id) / 10.0 + (*second % 100) as f64 / 1e4;
            market.record(Point {
                asset_id,
                time: *second,
                value,
            })
        })
        .collect()
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
        Some((_, len)) => assert!(out.len() == len || !complete, "bytes after the response"),
        None => assert!(!complete || out.is_empty(), "an incomplete head: {out:?}"),
    }
    out
}

/// Server frames: unmasked and final, text (protocol JSON, inflated if RSV1 says it is
/// compressed) or control within its size, and nothing after an allowed close.
fn check_frames(mut bytes: &[u8], complete: bool) {
    let (mut subscribed, mut inflater) = (None, Inflater::default());
    while !bytes.is_empty() {
        let mut cursor = Cursor::new(bytes);
        let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) else {
            assert!(!complete, "a broken frame header");
            return;
        };
        let start = cursor.position() as usize;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            assert!(!complete, "a frame cut short");
            return;
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
            message["points"]
                .as_array()
                .expect("points")
                .iter()
                .collect()
        }
        Some("point") => vec![message],
        other => panic!("unknown action {other:?}"),
    };
    let (asset, last) = subscribed.as_mut().expect("a point with a subscription");
    for point in points {
        let id = point["assetId"].as_i64().expect("id");
        let time = point["time"].as_i64().expect("time");
        assert!(
            asset.is_none_or(|a| a == id) && time > *last,
            "out of place: {text}"
        );
        (*asset, *last) = (Some(id), time);
    }
}
