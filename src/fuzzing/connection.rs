//! The fuzz target's oracle for one whole client connection: arbitrary bytes through the
//! real connection driver ([`Conn`]), the steps called as the reactor calls them.

use std::io::{self, Cursor, IoSlice, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use crate::asset::{Point, default_assets};
use crate::config::Config;
use crate::conn::{Conn, Context, Doom, OpsOnly, Shared, Step, Stream};
use crate::http;
use crate::market::Market;
use crate::metrics::Metrics;

/// The connection's key; the client's input per round at most; rounds at most.
const KEY: usize = 0;
const TURN_BYTES: usize = 16 * 1024 + http::MAX_HEAD_BYTES + 1;
const MAX_ROUNDS: usize = 4096;

/// Runs one connection on `data`: the first byte picks settings, the second seeds the
/// client's pace, the rest is what the client sends. Each round the client sends a
/// chunk and reads some output, then the connection gets what the reactor gives it:
/// a readable and a writable event, a resumed read when its budget ran out, sometimes a
/// tick (a point to subscribers) or the sweep. Checked: no panic, a turn's reads stay in
/// budget, the outgoing queue stays bounded, nothing is written after the write side is
/// shut, and the client gets one HTTP response, or the `101` and valid server frames
/// (protocol JSON, points only of its asset and in order, close codes the README lists).
///
/// Settings bits: 1 the test page on, 2 allowed origins limited, 4 messages of 64 bytes
/// at most, 8 the smallest client queue, 16 a slow reader, 32 a tick every round, 64 the
/// client never closes, 128 a connection beyond the limit (probes only).
pub fn drive_connection(data: &[u8]) {
    run_connection(data);
}

/// [`drive_connection`], returning what the client received.
pub(super) fn run_connection(data: &[u8]) -> Vec<u8> {
    let [flags, seed, input @ ..] = data else {
        return Vec::new();
    };
    let config = Config::from_lookup(|name| match name.strip_prefix("WS_ASSETS_")? {
        "ENABLE_UI" => Some((flags & 1 != 0).to_string()),
        "ALLOWED_ORIGINS" if flags & 2 != 0 => Some("https://app.example.com".into()),
        "MAX_MESSAGE_BYTES" if flags & 4 != 0 => Some("64".into()),
        "CLIENT_QUEUE_BYTES" if flags & 8 != 0 => Some("4096".into()),
        _ => None,
    })
    .expect("a valid configuration");
    let (mut market, mut metrics, mut shared) = (
        Market::new(default_assets(), config.history_seconds),
        Metrics::default(),
        Shared::default(),
    );
    let mut now = Instant::now();
    let mut second = 1_700_000_000;
    for _ in 0..seed % 48 {
        tick(&mut market, second);
        second += 1;
    }
    let peer = Peer {
        input: input.to_vec(),
        closes: flags & 64 == 0,
        ..Peer::default()
    };
    let mut conn = Conn::new(peer, now, now + config.handshake_timeout);
    conn.ops_only = (flags & 128 != 0).then_some(OpsOnly::Full);
    let mut rng = u64::from(*seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n) as usize
    };
    let mut idle_rounds = 0;
    for _ in 0..MAX_ROUNDS {
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
        let mut cx = Context {
            config: &config,
            market: &mut market,
            metrics: &mut metrics,
            shared: &mut shared,
            now,
        };
        let mut steps = Vec::new();
        let mut more = true;
        // A readable event, and the resumed read when its budget ran out.
        for _ in 0..2 {
            if more {
                let step = conn.on_readable(KEY, &mut cx);
                assert!(std::mem::take(&mut conn.stream_mut().read_in_turn) <= TURN_BYTES);
                more = step.more_to_read;
                steps.push(step);
            }
        }
        let _ = conn.flush();
        if flags & 32 != 0 || random(4) == 0 {
            for (index, frame) in tick(cx.market, second) {
                if cx.market.subscribers(index).contains(&KEY) {
                    steps.push(doomed(conn.send_point(&frame, now, &config).1));
                }
            }
            second += 1;
        }
        if random(16) == 0 {
            let subscribed = cx.market.is_subscribed(KEY);
            steps.push(doomed(conn.sweep(now, &config, subscribed).1));
        }
        for step in steps {
            if let Some((_, head_only)) = step.probe {
                let body = http::response(200, "application/json", "", b"{}", head_only);
                let _ = conn.respond(KEY, body, now, cx.metrics);
            }
            if let Some(doom) = step.doom
                && conn.end(KEY, doom, cx.market, now)
            {
                return check_output(conn, false);
            }
        }
        let bound = config.client_queue_bytes + 1024;
        assert!(
            conn.backlog() <= bound,
            "a queue of {} bytes",
            conn.backlog()
        );
        let peer = conn.stream_mut();
        idle_rounds = if peer.sent == peer.input.len() {
            idle_rounds + 1
        } else {
            0
        };
        if idle_rounds > 8 {
            break;
        }
    }
    check_output(conn, true)
}

/// Records a point for every asset at `second`; returns each asset's point frame.
fn tick(market: &mut Market, second: i64) -> Vec<(usize, Bytes)> {
    (1..=5)
        .filter_map(|asset_id| {
            let value = 1.0 + f64::from(asset_id) / 10.0 + (second % 100) as f64 / 1e4;
            market.record(Point {
                asset_id,
                time: second,
                value,
            })
        })
        .collect()
}

/// A step that only ends the connection, if `doom` says so.
fn doomed(doom: Option<Doom>) -> Step {
    Step {
        doom,
        ..Step::default()
    }
}

/// The client's end of the connection, in memory.
#[derive(Debug, Default)]
struct Peer {
    input: Vec<u8>,
    /// Bytes of `input` read by the server, sent by the client so far, read this turn.
    read: usize,
    sent: usize,
    read_in_turn: usize,
    /// Whether the client closes its side once everything is sent.
    closes: bool,
    /// What the server wrote, the bytes the client takes before writes block, and
    /// whether the write side was shut.
    written: Vec<u8>,
    room: usize,
    shut: bool,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ready = &self.input[self.read..self.sent];
        if ready.is_empty() {
            if self.closes && self.sent == self.input.len() {
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        self.read += n;
        self.read_in_turn += n;
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        assert!(!self.shut, "a write after the write side was shut");
        let wanted: usize = bufs.iter().map(|b| b.len()).sum();
        if wanted > 0 && self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let before = self.written.len();
        for buf in bufs {
            let n = buf.len().min(self.room - (self.written.len() - before));
            self.written.extend_from_slice(&buf[..n]);
        }
        let n = self.written.len() - before;
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Peer {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

/// Checks everything the client received; a connection still open writes the rest first.
fn check_output(mut conn: Conn<Peer>, open: bool) -> Vec<u8> {
    if open {
        conn.stream_mut().room = usize::MAX / 2;
        let _ = conn.flush();
    }
    let complete = conn.backlog() == 0;
    let out = std::mem::take(&mut conn.stream_mut().written);
    let Some(head_len) = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
    else {
        assert!(!complete || out.is_empty(), "an incomplete head: {out:?}");
        return out;
    };
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    assert!(
        response
            .parse(&out[..head_len])
            .is_ok_and(|s| s.is_complete())
    );
    if response.code == Some(101) {
        check_frames(&out[head_len..], complete);
    } else {
        let length = response.headers.iter().find(|h| h.name == "Content-Length");
        let length: usize = length
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .expect("a length");
        assert!(out.len() == head_len + length || out.len() == head_len || !complete);
    }
    out
}

/// The server's frames: unmasked, final, text (protocol JSON) or control within its
/// size, nothing after a close, whose code is one the README lists or the client's own.
fn check_frames(mut bytes: &[u8], complete: bool) {
    let mut subscribed: Option<(Option<i64>, i64)> = None;
    while !bytes.is_empty() {
        let mut cursor = Cursor::new(bytes);
        let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) else {
            assert!(!complete, "a broken frame header");
            return;
        };
        let start = cursor.position() as usize;
        let end = start + usize::try_from(len).expect("a frame that fits");
        if end > bytes.len() {
            assert!(!complete, "a frame cut short");
            return;
        }
        let payload = &bytes[start..end];
        bytes = &bytes[end..];
        assert!(header.is_final && header.mask.is_none() && !header.rsv2 && !header.rsv3);
        match header.opcode {
            OpCode::Data(Data::Text) => {
                let text = std::str::from_utf8(payload).expect("text frames are UTF-8");
                check_message(text, &mut subscribed);
            }
            OpCode::Control(Control::Close) => {
                assert!(bytes.is_empty(), "bytes after a close frame");
                if let [high, low, reason @ ..] = payload {
                    let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
                    assert!(code.is_allowed(), "close code {code}");
                    assert!(std::str::from_utf8(reason).is_ok());
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
    let id_time = |p: &Value| {
        (
            p["assetId"].as_i64().expect("id"),
            p["time"].as_i64().expect("time"),
        )
    };
    match value["action"].as_str() {
        Some("assets" | "error") => {}
        Some("unsubscribed") => *subscribed = None,
        Some("asset_history") => {
            let (mut asset, mut last) = (None, i64::MIN);
            for (id, time) in message["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(id_time)
            {
                assert!(
                    asset.is_none_or(|a| a == id) && time > last,
                    "a broken history"
                );
                (asset, last) = (Some(id), time);
            }
            *subscribed = Some((asset, last));
        }
        Some("point") => {
            let Some((asset, last)) = subscribed else {
                panic!("a point without a subscription: {text}");
            };
            let (id, time) = id_time(message);
            assert!(
                asset.is_none_or(|a| a == id) && time > *last,
                "a point out of place"
            );
            (*asset, *last) = (Some(id), time);
        }
        other => panic!("unknown action {other:?}"),
    }
}
