//! Entry points for the fuzz targets in `fuzz/`: each feeds arbitrary bytes to one
//! parser of outside input, or to a whole client connection, and checks what must hold.
//!
//! Compiled only with `--cfg fuzzing` (which `cargo fuzz` sets) and in unit tests, which
//! replay the seed corpus and every past finding, so the service never carries it. A broken invariant panics: that is how the fuzzer reports a finding.
//! Everything here calls the service's own functions; only the reactor's bookkeeping
//! around one connection (which needs a `mio` registry) is retraced, step for step,
//! by [`drive_connection`].
// An oracle fails by panicking: that is how libFuzzer learns of a finding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Cursor, IoSlice, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::asset::{Point, default_assets};
use crate::config::Config;
use crate::conn::{Conn, Incoming, OpsOnly, Phase, Stream};
use crate::feed::{FeedError, ratesjson};
use crate::frame::text_frame;
use crate::http::{self, Origins, Route};
use crate::market::Market;
use crate::protocol::{self, Request, RequestError};
use crate::reactor::clients::{
    self, Doom, READ_BUDGET, READ_BUDGET_BYTES, SLOW_CONSUMER, websocket_config,
};
use crate::store::dsn;

// ---- the client request ------------------------------------------------------------

/// Parses `data` as a client's text message ([`protocol::parse_request`]); checks that
/// an accepted request says what the JSON says and that the error reply is the
/// documented JSON, short whatever the input.
pub fn parse_request(data: &[u8]) {
    // tungstenite hands over text frames only once they are valid UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = protocol::parse_request(text);
    match &result {
        Ok(request) => {
            let value: Value = serde_json::from_str(text).expect("accepted text is JSON");
            assert!(
                value["message"].is_object(),
                "accepted without a message object"
            );
            let action = value["action"]
                .as_str()
                .expect("accepted without an action");
            match *request {
                Request::Assets => assert_eq!(action, "assets"),
                Request::Unsubscribe => assert_eq!(action, "unsubscribe"),
                Request::Subscribe { asset_id, since } => {
                    assert_eq!(action, "subscribe");
                    assert!(asset_id >= 1, "assetId {asset_id} accepted");
                    assert_eq!(
                        value["message"]["assetId"].as_i64(),
                        Some(i64::from(asset_id))
                    );
                    assert!(since.is_none_or(|s| s >= 0), "since {since:?} accepted");
                }
            }
        }
        Err(error) => check_error_reply(error),
    }
    // Whitespace around a JSON text changes nothing.
    let padded = protocol::parse_request(&format!(" \n{text}\t "));
    match (&result, &padded) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.error_type(), b.error_type()),
        _ => panic!("surrounding whitespace changed {result:?} into {padded:?}"),
    }
}

/// The error reply: `{"action":"error","message":{"error_type":..,"error_text":..}}`.
fn check_error_reply(error: &RequestError) {
    let reply = protocol::error_message(error);
    assert!(
        reply.len() <= 1024,
        "an error reply of {} bytes",
        reply.len()
    );
    let value: Value = serde_json::from_slice(&reply).expect("the error reply is JSON");
    assert_eq!(value["action"], "error");
    assert_eq!(value["message"]["error_type"], error.error_type().as_str());
    assert!(value["message"]["error_text"].is_string());
}

// ---- the HTTP request head ----------------------------------------------------------

/// Parses `data` as the start of a connection ([`http::parse_head`]) and routes the head
/// ([`http::route`], [`Origins::allow`]); checks the parse against a re-parse of the
/// head alone, the route against the head, and every response it leads to.
pub fn parse_head_and_route(data: &[u8]) {
    let Ok(Some(head)) = http::parse_head(data) else {
        return;
    };
    assert!(head.len <= data.len());
    assert!(
        head.len <= http::MAX_HEAD_BYTES,
        "a head of {} bytes accepted",
        head.len
    );
    // What follows the head is not part of it.
    assert_eq!(http::parse_head(&data[..head.len]), Ok(Some(head.clone())));
    if head.len > 0 {
        assert_eq!(http::parse_head(&data[..head.len - 1]), Ok(None));
    }
    let head_only = head.method == "HEAD";
    for ui in [false, true] {
        match http::route(&head, ui) {
            Route::WebSocket(key) => {
                assert_eq!(head.method, "GET");
                assert!(head.http11 && head.host.is_some());
                assert!(matches!(head.path.as_str(), "/" | "/api/v1/websocket"));
                assert_eq!(key.len(), 24, "key {key:?}");
                check_http_response(&http::upgrade_response(&key), 101, true);
            }
            Route::Page => {
                assert!(ui);
                assert!(matches!(head.method.as_str(), "GET" | "HEAD"));
            }
            Route::Health | Route::Metrics => {
                assert!(matches!(head.method.as_str(), "GET" | "HEAD"));
            }
            Route::Error(status, text) => {
                assert!(
                    matches!(status, 400 | 404 | 405 | 426),
                    "route gave {status}"
                );
                let response = http::error_response(status, text, head_only);
                check_http_response(&response, status, head_only);
            }
        }
    }
    let origin = head.origin.as_deref();
    let host = head.host.as_deref();
    assert!(Origins::Any.allow(origin, host));
    let only = Origins::parse("https://app.example.com,http://localhost:8080")
        .expect("a valid origin list");
    let allowed = only.allow(origin, host);
    if origin.is_none() {
        assert!(allowed, "a request without Origin refused");
    }
    if origin.is_some_and(|o| o.eq_ignore_ascii_case("https://app.example.com")) {
        assert!(allowed, "a listed origin refused");
    }
}

/// Checks that `bytes` is one complete response with `status` and a body of its
/// `Content-Length` (none for `HEAD` and `101`), and nothing after it.
fn check_http_response(bytes: &[u8], status: u16, head_only: bool) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = response.parse(bytes) else {
        panic!("not a response: {:?}", String::from_utf8_lossy(bytes));
    };
    assert_eq!(response.code, Some(status));
    assert_eq!(response.version, Some(1));
    let content_length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a numeric Content-Length")
        });
    match content_length {
        Some(body) if !head_only => assert_eq!(bytes.len(), len + body),
        Some(_) => assert_eq!(bytes.len(), len),
        None => {
            assert_eq!(status, 101, "a {status} without Content-Length");
            assert_eq!(bytes.len(), len);
        }
    }
}

// ---- the FXCM body ------------------------------------------------------------------

/// Parses `data` as a feed's answer ([`ratesjson::parse`]) for the default assets;
/// checks every quote, that the JSONP wrapper changes nothing, and that a strict JSON
/// document with a `Rates` array (which `serde_json` reads) is never refused.
pub fn ratesjson(data: &[u8]) {
    let assets = default_assets();
    let result = ratesjson::parse(data, &assets);
    match &result {
        Ok(fetched) => {
            let mut next = 0;
            for quote in &fetched.quotes {
                assert!(quote.value.is_finite() && quote.value > 0.0, "{quote:?}");
                let at = assets[next..]
                    .iter()
                    .position(|a| a.id == quote.asset_id)
                    .expect("quotes of known assets, in the assets' order, once each");
                next += at + 1;
            }
        }
        Err(FeedError::Parse(_)) => {}
        Err(other) => panic!("a parse gave {other:?}"),
    }
    if data.trim_ascii_start().first() == Some(&b'{') {
        let mut wrapped = b"null(".to_vec();
        wrapped.extend_from_slice(data);
        wrapped.extend_from_slice(b");");
        let unwrapped = ratesjson::parse(&wrapped, &assets);
        assert_eq!(
            result.is_ok(),
            unwrapped.is_ok(),
            "{result:?} / {unwrapped:?}"
        );
        if let (Ok(a), Ok(b)) = (&result, &unwrapped) {
            assert_eq!(a, b);
        }
    }
    // A strict JSON document: escapes in member names, duplicate "Rates" members and
    // nesting past the parser's bound are the documented differences.
    if result.is_err()
        && !data.contains(&b'\\')
        && data.windows(7).filter(|w| *w == b"\"Rates\"").count() == 1
        && let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(data)
        && root.get("Rates").is_some_and(Value::is_array)
        && depth(&Value::Object(root)) <= ratesjson::MAX_DEPTH
    {
        panic!("strict JSON refused: {result:?}");
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

// ---- the DSN ------------------------------------------------------------------------

/// Parses `data` as `WS_ASSETS_POSTGRESQL_DSN` ([`dsn::PgSettings::parse`]), as given
/// and with a password spliced in; checks that neither the error nor what is shown of
/// an accepted DSN (its redacted form, its `Debug`) carries the password.
pub fn dsn(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = check_dsn(text, None);
    const SECRET: &str = "Qz7xSecretPw9";
    if text.contains(SECRET) || shown.contains(SECRET) {
        // The fuzzer learns the string from the checks below and may write it (or an
        // escaped or percent-encoded form of it) into a host or user, which do show.
        return;
    }
    // A URL gets the password in its user info; anything else (read as key=value, where
    // text before `://` may well be a host's value) gets a `password=` of its own.
    let spliced = match text.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{scheme}://fuzzuser:{SECRET}@{rest}")
        }
        _ => format!("password={SECRET} {text}"),
    };
    check_dsn(&spliced, Some(SECRET));
}

/// Parses `text`; returns what the service may show of it (the redacted form and
/// `Debug`, or the error), after checking that it does not carry `secret`.
fn check_dsn(text: &str, secret: Option<&str>) -> String {
    let shown = match dsn::PgSettings::parse(text) {
        Ok(settings) => {
            let config = dsn::with_service_defaults(settings.postgres());
            let _ = dsn::host_list(&config);
            format!("{}\n{settings:?}", settings.redacted())
        }
        Err(error) => format!("{error}\n{error:?}"),
    };
    if let Some(secret) = secret {
        assert!(!shown.contains(secret), "{shown}");
    }
    shown
}

// ---- one connection -----------------------------------------------------------------

/// The connection's key in the market's subscriber lists.
const KEY: usize = 0;

/// The first tick's second.
const EPOCH: i64 = 1_700_000_000;

/// Rounds of events at most, whatever the input.
const MAX_ROUNDS: usize = 4096;

/// Runs one connection on `data`: the first byte picks settings, the second seeds the
/// chunking, the rest is what the client sends.
///
/// The client's bytes arrive in chunks (sizes drawn from the seed); between chunks the
/// socket reports `WouldBlock`, and the client reads our output at a pace also drawn
/// from the seed. Each round is what the reactor does for one connection: a readable
/// and a writable event, the resumed read of a client over its turn's budget, and
/// sometimes a tick (its point written to subscribers) or a ping. Checked: reads stay
/// within the turn's budget, the queue stays bounded, nothing is written after the
/// write side is shut, and what the client receives is one valid HTTP response, or
/// the `101` and then valid server frames, JSON messages of the protocol, with no point
/// of an asset the client is not subscribed to and none out of order.
///
/// Settings bits: 1 the test page on, 2 allowed origins limited, 4 messages of 64
/// bytes at most, 8 the smallest client queue, 16 a slow reader, 32 a tick every round,
/// 64 the client never closes, 128 a connection beyond the limit (ops only).
pub fn drive_connection(data: &[u8]) {
    run_connection(data);
}

/// [`drive_connection`], returning what the client received.
fn run_connection(data: &[u8]) -> Vec<u8> {
    let [flags, seed, input @ ..] = data else {
        return Vec::new();
    };
    let flags = *flags;
    let config = Config::from_lookup(|name| {
        let value = match name.strip_prefix("WS_ASSETS_")? {
            "ENABLE_UI" => (flags & 1 != 0).to_string(),
            "ALLOWED_ORIGINS" if flags & 2 != 0 => "https://app.example.com".into(),
            "MAX_MESSAGE_BYTES" if flags & 4 != 0 => "64".into(),
            "CLIENT_QUEUE_BYTES" if flags & 8 != 0 => "4096".into(),
            _ => return None,
        };
        Some(value)
    })
    .expect("a valid configuration");
    let mut run = Run::new(config, flags, *seed, input);
    run.go();
    run.check_output();
    std::mem::take(&mut run.conn.socket.tcp.written)
}

/// The client's end of the connection, in memory.
#[derive(Debug)]
struct Peer {
    input: Vec<u8>,
    /// Bytes of `input` read by the server.
    read: usize,
    /// Bytes of `input` sent so far.
    sent: usize,
    /// Whether the client closes its side once everything is sent.
    closes: bool,
    /// Bytes read since the turn began.
    read_in_turn: usize,
    /// What the server wrote.
    written: Vec<u8>,
    /// Bytes the client will still take before the server's writes block.
    room: usize,
    /// Whether the server shut its write side.
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
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut total = 0;
        for buf in bufs {
            let n = buf.len().min(self.room);
            self.written.extend_from_slice(&buf[..n]);
            self.room -= n;
            total += n;
            if n < buf.len() {
                break;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Peer {
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A small deterministic generator for chunk sizes and event choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

/// One connection and the part of the reactor's state it touches.
struct Run {
    conn: Conn<Peer>,
    market: Market,
    config: Config,
    ws_config: WebSocketConfig,
    rng: Rng,
    flags: u8,
    now: Instant,
    /// What happens to the connection after the current step.
    doomed: Vec<Doom>,
    more_to_read: bool,
    gone: bool,
    /// The second of the next tick.
    second: i64,
    /// The key of an accepted upgrade.
    upgraded: Option<String>,
    /// The HTTP response queued, if any.
    response: Option<(Vec<u8>, u16, bool)>,
    /// The longest reply frame queued, for the queue's bound.
    largest_reply: usize,
}

impl Run {
    fn new(config: Config, flags: u8, seed: u8, input: &[u8]) -> Run {
        let now = Instant::now();
        let peer = Peer {
            input: input.to_vec(),
            read: 0,
            sent: 0,
            closes: flags & 64 == 0,
            read_in_turn: 0,
            written: Vec::new(),
            room: 0,
            shut: false,
        };
        let mut conn = Conn::new(peer, now, now + config.handshake_timeout);
        conn.ops_only = (flags & 128 != 0).then_some(OpsOnly::Full);
        let mut market = Market::new(default_assets(), config.history_seconds);
        let mut second = EPOCH;
        // Some history, so that subscribing sends points.
        for _ in 0..u32::from(seed % 48) {
            record_all(&mut market, second);
            second += 1;
        }
        Run {
            conn,
            market,
            ws_config: websocket_config(config.max_message_bytes),
            config,
            rng: Rng(u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            flags,
            now,
            doomed: Vec::new(),
            more_to_read: false,
            gone: false,
            second,
            upgraded: None,
            response: None,
            largest_reply: 0,
        }
    }

    /// Rounds of events until the connection is gone or nothing more can happen.
    fn go(&mut self) {
        let mut rounds_after_input = 0;
        for _ in 0..MAX_ROUNDS {
            self.client_acts();
            self.now += Duration::from_millis(10);
            // An event for the connection: readable and writable.
            self.on_readable();
            self.end_doomed();
            if !self.gone {
                self.flush();
                self.end_doomed();
            }
            // After the events: clients over their budget.
            if !self.gone && std::mem::take(&mut self.more_to_read) {
                self.read_websocket();
                self.end_doomed();
            }
            // The clock.
            if !self.gone && (self.flags & 32 != 0 || self.rng.below(4) == 0) {
                self.tick();
                self.end_doomed();
            }
            if !self.gone && self.rng.below(16) == 0 {
                self.sweep_ping();
                self.end_doomed();
            }
            if self.gone {
                return;
            }
            self.check_bounds();
            let peer = &self.conn.socket.tcp;
            if peer.sent == peer.input.len() && !self.more_to_read {
                rounds_after_input += 1;
                if rounds_after_input > 8 {
                    return;
                }
            }
        }
    }

    /// The client sends its next chunk and reads some of what it was sent.
    fn client_acts(&mut self) {
        let size = match self.rng.below(8) {
            0 => 1,
            1..=3 => 1 + self.rng.below(16),
            4 | 5 => 1 + self.rng.below(512),
            6 => 1 + self.rng.below(8192),
            _ => usize::MAX,
        };
        let slow = self.flags & 16 != 0;
        let room = if slow { self.rng.below(300) } else { 1 << 20 };
        let peer = &mut self.conn.socket.tcp;
        peer.sent = peer.sent.saturating_add(size).min(peer.input.len());
        peer.room = peer.room.saturating_add(room);
    }

    /// Invariants between rounds.
    fn check_bounds(&self) {
        if let Phase::Http { head, .. } = &self.conn.phase {
            assert!(
                head.len() < http::MAX_HEAD_BYTES + 2048,
                "a head buffer of {} bytes",
                head.len()
            );
        }
        let backlog = self.conn.socket.outbox.backlog_bytes();
        let bound = self.config.client_queue_bytes + self.largest_reply + 1024;
        assert!(
            backlog <= bound,
            "a backlog of {backlog} bytes, over {bound}"
        );
    }

    // ---- as reactor/clients.rs does for one connection ----

    /// `Clients::on_readable`.
    fn on_readable(&mut self) {
        match &self.conn.phase {
            Phase::Http { .. } => self.read_http(),
            Phase::WebSocket(_) => self.read_websocket(),
            Phase::Closing { .. } => {
                if self.conn.drain_input() {
                    self.doomed.push(Doom::Drop(None));
                }
            }
        }
    }

    /// `Clients::read_http`; `/health` and `/metrics` get a stand-in body.
    fn read_http(&mut self) {
        let head = match self.conn.read_head() {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(None) => {
                self.doomed.push(Doom::Drop(None));
                return;
            }
            Err(Some(status)) => {
                assert!(matches!(status, 400 | 431), "read_head gave {status}");
                let text = if status == 431 {
                    "request head too large"
                } else {
                    "malformed HTTP request"
                };
                self.respond(http::error_response(status, text, false), status, false);
                return;
            }
        };
        let head_only = head.method == "HEAD";
        let route = match http::route(&head, self.config.enable_ui) {
            route @ (Route::Health | Route::Metrics) => route,
            _ if self.conn.ops_only.is_some() => Route::Error(503, "connection limit reached"),
            Route::WebSocket(_)
                if !self
                    .config
                    .allowed_origins
                    .allow(head.origin.as_deref(), head.host.as_deref()) =>
            {
                Route::Error(403, "this origin may not open a WebSocket here")
            }
            route => route,
        };
        let (response, status) = match route {
            Route::WebSocket(key) => {
                self.conn.upgrade(head.len, &key, self.ws_config);
                self.upgraded = Some(key);
                self.flush();
                self.read_websocket();
                return;
            }
            Route::Health | Route::Metrics => (
                http::response(200, "text/plain", "", b"stand-in\n", head_only),
                200,
            ),
            Route::Page => (
                http::response(
                    200,
                    "text/html; charset=utf-8",
                    "",
                    b"<!doctype html>",
                    head_only,
                ),
                200,
            ),
            Route::Error(status, text) => (http::error_response(status, text, head_only), status),
        };
        self.respond(response, status, head_only);
    }

    /// `Clients::respond`.
    fn respond(&mut self, response: Vec<u8>, status: u16, head_only: bool) {
        assert!(self.response.is_none(), "a second HTTP response");
        self.response = Some((response.clone(), status, head_only));
        self.conn.socket.outbox.push(Bytes::from(response));
        self.conn.linger(self.now + Duration::from_secs(3));
        self.flush();
    }

    /// `Clients::read_websocket`.
    fn read_websocket(&mut self) {
        self.conn.socket.tcp.read_in_turn = 0;
        self.conn.start_turn(READ_BUDGET_BYTES);
        self.read_messages();
        let read = self.conn.socket.tcp.read_in_turn;
        assert!(read <= READ_BUDGET_BYTES, "{read} bytes read in one turn");
    }

    fn read_messages(&mut self) {
        for _ in 0..READ_BUDGET {
            if self.is_over_limit() {
                self.flush();
                if self.is_over_limit() {
                    self.doomed.push(SLOW_CONSUMER);
                    return;
                }
            }
            match self.conn.read_message(self.now) {
                Ok(Some(Incoming::Text(text))) => {
                    let reply = match protocol::parse_request(text.as_str()) {
                        Ok(request) => self.handle_request(request),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = reply {
                        self.reply_error(&e);
                    }
                }
                Ok(Some(Incoming::Binary)) => self.reply_error(&protocol::binary_frame_error()),
                Ok(Some(Incoming::Control)) => {}
                Ok(Some(Incoming::Yield)) => break,
                Ok(None) => return self.flush_read(),
                Err(ended) => {
                    self.doomed.push(clients::doom_for(KEY, ended));
                    return self.flush_read();
                }
            }
        }
        self.more_to_read = true;
        self.flush_read();
    }

    /// `Clients::flush_read`.
    fn flush_read(&mut self) {
        self.flush();
        if self.is_over_limit() {
            self.doomed.push(SLOW_CONSUMER);
        }
    }

    /// `Clients::is_over_limit`.
    fn is_over_limit(&self) -> bool {
        self.conn.socket.outbox.backlog_bytes() > self.config.client_queue_bytes
    }

    /// `Clients::handle_request`.
    fn handle_request(&mut self, request: Request) -> Result<(), RequestError> {
        match request {
            Request::Assets => self.send(self.market.assets_frame()),
            Request::Subscribe { asset_id, since } => {
                let index = self
                    .market
                    .index_of(asset_id)
                    .ok_or(RequestError::UnknownAsset(asset_id))?;
                self.unsubscribe();
                let (sub, history) = self.market.subscribe(KEY, index, since);
                self.conn.sub = Some(sub);
                self.send(history);
            }
            Request::Unsubscribe => {
                self.unsubscribe();
                self.send(text_frame(protocol::UNSUBSCRIBED_MESSAGE));
            }
        }
        Ok(())
    }

    /// `Clients::reply_error`.
    fn reply_error(&mut self, error: &RequestError) {
        check_error_reply(error);
        self.send(text_frame(&protocol::error_message(error)));
    }

    /// `Clients::send`.
    fn send(&mut self, frame: Bytes) {
        self.largest_reply = self.largest_reply.max(frame.len());
        self.conn.socket.outbox.push(frame);
    }

    /// `Clients::unsubscribe` (no other connection's slot to fix).
    fn unsubscribe(&mut self) {
        if let Some(sub) = self.conn.sub.take() {
            assert_eq!(self.market.unsubscribe(sub), None);
        }
    }

    /// `Clients::flush`.
    fn flush(&mut self) {
        if self.conn.flush().is_err() {
            self.doomed.push(Doom::Drop(None));
        }
    }

    /// `Reactor::deliver` for a tick with a point of every asset, then the sweep's trim;
    /// `Clients::fan_out` for this connection.
    fn tick(&mut self) {
        let second = self.second;
        self.second += 1;
        for index in 0..self.market.assets().len() {
            let asset_id = self.market.assets()[index].asset.id;
            let point = point_at(asset_id, second);
            let Some((at, frame)) = self.market.record(point) else {
                panic!("a newer point refused");
            };
            if !self.market.subscribers(at).contains(&KEY) {
                continue;
            }
            if self.conn.ping_sent.is_none() && self.rng.below(8) == 0 {
                self.conn.ping(self.now);
            }
            match self
                .conn
                .socket
                .outbox
                .send(&frame, &mut self.conn.socket.tcp)
            {
                Ok(_) => {}
                Err(_) => {
                    self.doomed.push(Doom::Drop(None));
                    continue;
                }
            }
            if self.conn.socket.outbox.backlog_bytes() > self.config.client_queue_bytes {
                self.doomed.push(SLOW_CONSUMER);
            }
        }
        self.market.trim(second);
    }

    /// `Clients::sweep` for a quiet WebSocket client.
    fn sweep_ping(&mut self) {
        if self.conn.is_websocket() && self.conn.ping_sent.is_none() {
            self.conn.ping(self.now);
            self.flush();
        }
    }

    /// `Clients::end_doomed`.
    fn end_doomed(&mut self) {
        while let Some(doom) = self.doomed.pop() {
            if self.gone {
                continue;
            }
            match doom {
                Doom::Close(code, reason, discard, _) => {
                    if matches!(self.conn.phase, Phase::Closing { .. }) {
                        continue;
                    }
                    self.conn
                        .close(code, reason, discard, self.now + Duration::from_secs(3));
                    self.unsubscribe();
                    self.flush();
                }
                Doom::Drop(_) => {
                    self.unsubscribe();
                    self.gone = true;
                }
            }
        }
    }

    // ---- what the client received ----

    /// Checks everything written, after letting a connection still open write the rest.
    fn check_output(&mut self) {
        if !self.gone {
            self.conn.socket.tcp.room = usize::MAX;
            let _ = self.conn.flush();
        }
        let complete = self.conn.socket.outbox.is_empty();
        let out = &self.conn.socket.tcp.written;
        if let Some(key) = &self.upgraded {
            assert!(self.response.is_none());
            let hello = http::upgrade_response(key);
            let n = hello.len().min(out.len());
            assert_eq!(out[..n], hello[..n], "the 101 first");
            if out.len() < hello.len() {
                assert!(!complete);
                return;
            }
            check_frames(&out[hello.len()..], complete);
        } else if let Some((response, status, head_only)) = &self.response {
            check_http_response(response, *status, *head_only);
            assert!(response.starts_with(out), "not the queued response");
            if complete {
                assert_eq!(out.len(), response.len());
            }
        } else {
            assert!(out.is_empty(), "bytes without a response: {out:?}");
        }
    }
}

/// A tick's point: a value that stays positive, different every second.
fn point_at(asset_id: i32, second: i64) -> Point {
    Point {
        asset_id,
        time: second,
        value: 1.0 + f64::from(asset_id) / 10.0 + (second % 100) as f64 / 1e4,
    }
}

fn record_all(market: &mut Market, second: i64) {
    for index in 0..market.assets().len() {
        let asset_id = market.assets()[index].asset.id;
        market.record(point_at(asset_id, second));
    }
}

/// Checks the server's frames: unmasked, final, no reserved bits, text (JSON messages of
/// the protocol) or control frames within their size, nothing after a close; points
/// only of the subscribed asset, in order after its history. A last frame may be cut
/// short only if the connection was dropped before its queue was written.
fn check_frames(mut bytes: &[u8], complete: bool) {
    // The subscribed asset (None: not known from an empty history) and its last time.
    let mut subscribed: Option<(Option<i64>, i64)> = None;
    let mut closed = false;
    while !bytes.is_empty() {
        assert!(!closed, "bytes after a close frame");
        let mut cursor = Cursor::new(bytes);
        let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) else {
            assert!(!complete, "a broken frame header");
            return;
        };
        let start = cursor.position() as usize;
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            panic!("a frame of {len} bytes");
        };
        if end > bytes.len() {
            assert!(!complete, "a frame cut short");
            return;
        }
        let payload = &bytes[start..end];
        bytes = &bytes[end..];
        assert!(header.is_final, "a fragmented server frame");
        assert!(!header.rsv1 && !header.rsv2 && !header.rsv3);
        assert!(header.mask.is_none(), "a masked server frame");
        match header.opcode {
            OpCode::Data(Data::Text) => {
                let text = std::str::from_utf8(payload).expect("text frames are UTF-8");
                check_message(text, &mut subscribed);
            }
            OpCode::Control(control) => {
                assert!(payload.len() <= 125, "a control frame of {}", payload.len());
                match control {
                    Control::Close => {
                        closed = true;
                        if !payload.is_empty() {
                            assert!(payload.len() >= 2);
                            let code = u16::from_be_bytes([payload[0], payload[1]]);
                            assert!(
                                matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999),
                                "close code {code}"
                            );
                            assert!(std::str::from_utf8(&payload[2..]).is_ok());
                        }
                    }
                    Control::Ping | Control::Pong => {}
                    Control::Reserved(op) => panic!("reserved control opcode {op}"),
                }
            }
            other => panic!("a server frame with opcode {other:?}"),
        }
    }
}

fn check_message(text: &str, subscribed: &mut Option<(Option<i64>, i64)>) {
    let value: Value = serde_json::from_str(text).expect("messages are JSON");
    let message = &value["message"];
    assert!(message.is_object(), "{text}");
    match value["action"].as_str() {
        Some("assets" | "error") => {}
        Some("unsubscribed") => *subscribed = None,
        Some("asset_history") => {
            let points = message["points"].as_array().expect("points");
            let mut asset = None;
            let mut last = i64::MIN;
            for point in points {
                let id = point["assetId"].as_i64().expect("assetId");
                let time = point["time"].as_i64().expect("time");
                assert!(asset.is_none_or(|a| a == id), "a history of two assets");
                assert!(time > last, "history out of order");
                asset = Some(id);
                last = time;
            }
            *subscribed = Some((asset, last));
        }
        Some("point") => {
            let Some((asset, last)) = subscribed else {
                panic!("a point without a subscription: {text}");
            };
            let id = message["assetId"].as_i64().expect("assetId");
            let time = message["time"].as_i64().expect("time");
            assert!(asset.is_none_or(|a| a == id), "a point of another asset");
            assert!(time > *last, "a point not after the last one: {text}");
            *asset = Some(id);
            *last = time;
        }
        other => panic!("unknown action {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `target` on every seed in `fuzz/corpus/<name>/`.
    fn seeds(name: &str, target: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(name);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            count += 1;
        }
        assert!(count > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn request_seeds_pass() {
        seeds("request", super::parse_request);
    }

    #[test]
    fn http_head_seeds_pass() {
        seeds("http_head", super::parse_head_and_route);
    }

    #[test]
    fn ratesjson_seeds_pass() {
        seeds("ratesjson", super::ratesjson);
    }

    #[test]
    fn dsn_seeds_pass() {
        seeds("dsn", super::dsn);
    }

    #[test]
    fn connection_seeds_pass() {
        seeds("connection", super::drive_connection);
    }

    /// The harness really talks WebSocket: the session seed gets every kind of reply.
    #[test]
    fn the_session_seed_is_answered() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection");
        let out = super::run_connection(&std::fs::read(dir.join("session")).unwrap());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        for expected in [
            "\"action\":\"assets\"",
            "\"action\":\"asset_history\"",
            "\"UnknownAsset\"",
            "binary frames are not accepted",
            "\"ParseError\"",
            "\"action\":\"unsubscribed\"",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        assert!(out.windows(2).any(|w| w == [0x8A, 2]), "the pong");
        assert!(
            out.ends_with(&[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']),
            "the close echoed"
        );
        // A client that asks for histories faster than it reads is closed with 1008.
        let out = super::run_connection(&std::fs::read(dir.join("slow_consumer")).unwrap());
        let slow = b"\x88\x0F\x03\xF0slow consumer";
        assert!(
            out.windows(slow.len()).any(|w| w == slow),
            "closed as a slow consumer"
        );
        let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection/page");
        let out = super::run_connection(&std::fs::read(page).unwrap());
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}
