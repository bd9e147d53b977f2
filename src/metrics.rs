//! Counters the reactor keeps, and their Prometheus text rendering.
//!
//! Only the reactor thread touches them, so they are plain integers. Gauges that the
//! reactor can read off its own state (connections, subscriptions, queue length) are
//! passed in at render time instead of being tracked twice.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cluster::Role;
use crate::deflate::InflateError;
use crate::protocol::ErrorType;

/// A closed set of label values: each enum that labels a counter lists its values once,
/// so a count can only be taken for a value the exposition knows.
pub trait Label: Copy + Eq + 'static {
    /// The Prometheus label name, e.g. `reason`.
    const NAME: &'static str;
    /// Every value, in the order they are rendered.
    const ALL: &'static [Self];
    /// The label value, e.g. `slow_consumer`.
    fn label(self) -> &'static str;
}

/// One counter per value of a [`Label`].
#[derive(Debug, Clone)]
pub struct ByLabel<L: Label> {
    counts: Vec<u64>,
    labels: std::marker::PhantomData<L>,
}

impl<L: Label> Default for ByLabel<L> {
    fn default() -> Self {
        ByLabel {
            counts: vec![0; L::ALL.len()],
            labels: std::marker::PhantomData,
        }
    }
}

impl<L: Label> ByLabel<L> {
    /// Counts one occurrence of `label`.
    pub fn add(&mut self, label: L) {
        self.add_many(label, 1);
    }

    /// Counts `n` occurrences of `label`.
    pub fn add_many(&mut self, label: L, n: u64) {
        if let Some(i) = L::ALL.iter().position(|l| *l == label) {
            self.counts[i] += n;
        }
    }

    /// The count of `label`, for unit tests that read a counter without rendering it.
    #[cfg(test)]
    pub(crate) fn get(&self, label: L) -> u64 {
        L::ALL
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.counts[i])
    }

    fn samples(&self) -> Vec<(String, f64)> {
        L::ALL
            .iter()
            .zip(&self.counts)
            .map(|(l, n)| (format!("{{{}=\"{}\"}}", L::NAME, l.label()), *n as f64))
            .collect()
    }
}

/// Why the server dropped a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its outgoing queue exceeded the limit (closed with 1008).
    SlowConsumer,
    /// It did not answer a ping in time.
    PongTimeout,
    /// It sent a message over the size limit (closed with 1009).
    MessageTooLarge,
    /// It broke the WebSocket protocol (1002) or sent invalid UTF-8 (1007).
    ProtocolError,
    /// It did not finish its HTTP request head in time.
    HandshakeTimeout,
    /// The connection limit was reached when it connected.
    ConnectionLimit,
    /// Its address already held `WS_ASSETS_MAX_CONNECTIONS_PER_IP` connections.
    AddressLimit,
    /// A browser page whose origin is not allowed asked for a WebSocket.
    OriginRefused,
    /// Its TLS handshake failed: no protocol version, cipher suite or ALPN protocol in
    /// common, a malformed message, or a client that does not trust the certificate.
    TlsHandshake,
    /// It spoke plain HTTP to the TLS port (answered 400 in plain text).
    PlainHttp,
}

impl Label for DropReason {
    const NAME: &'static str = "reason";
    const ALL: &'static [DropReason] = &[
        DropReason::SlowConsumer,
        DropReason::PongTimeout,
        DropReason::MessageTooLarge,
        DropReason::ProtocolError,
        DropReason::HandshakeTimeout,
        DropReason::ConnectionLimit,
        DropReason::AddressLimit,
        DropReason::OriginRefused,
        DropReason::TlsHandshake,
        DropReason::PlainHttp,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::PongTimeout => "pong_timeout",
            DropReason::MessageTooLarge => "message_too_large",
            DropReason::ProtocolError => "protocol_error",
            DropReason::HandshakeTimeout => "handshake_timeout",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::AddressLimit => "address_limit",
            DropReason::OriginRefused => "origin_refused",
            DropReason::TlsHandshake => "tls_handshake",
            DropReason::PlainHttp => "plain_http",
        }
    }
}

/// What became of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// The feed answered and at least one point was recorded.
    Ok,
    /// The feed answered with no usable quote.
    Empty,
    /// The feed failed (timeout, HTTP status, connection, body).
    Failed,
    /// The fetch came back after a newer tick's points.
    Late,
    /// No fetch was started: the in-flight bound was reached.
    Skipped,
    /// The second passed without a tick being started: the loop was held up or the
    /// clock jumped.
    Missed,
}

impl Label for TickOutcome {
    const NAME: &'static str = "outcome";
    const ALL: &'static [TickOutcome] = &[
        TickOutcome::Ok,
        TickOutcome::Empty,
        TickOutcome::Failed,
        TickOutcome::Late,
        TickOutcome::Skipped,
        TickOutcome::Missed,
    ];

    fn label(self) -> &'static str {
        match self {
            TickOutcome::Ok => "ok",
            TickOutcome::Empty => "empty",
            TickOutcome::Failed => "failed",
            TickOutcome::Late => "late",
            TickOutcome::Skipped => "skipped",
            TickOutcome::Missed => "missed",
        }
    }
}

/// A client request, by its `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `assets`.
    Assets,
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
}

impl Label for Action {
    const NAME: &'static str = "action";
    const ALL: &'static [Action] = &[Action::Assets, Action::Subscribe, Action::Unsubscribe];

    fn label(self) -> &'static str {
        match self {
            Action::Assets => "assets",
            Action::Subscribe => "subscribe",
            Action::Unsubscribe => "unsubscribe",
        }
    }
}

impl Label for ErrorType {
    const NAME: &'static str = "error_type";
    const ALL: &'static [ErrorType] = &[
        ErrorType::ParseError,
        ErrorType::ValidationError,
        ErrorType::UnknownAsset,
    ];

    fn label(self) -> &'static str {
        self.as_str()
    }
}

impl Label for Role {
    const NAME: &'static str = "role";
    const ALL: &'static [Role] = &[Role::Standalone, Role::Leader, Role::Follower];

    fn label(self) -> &'static str {
        Role::label(self)
    }
}

/// How a message went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Plain,
    /// Compressed (permessage-deflate).
    Deflate,
}

impl Encoding {
    /// The encoding of a server frame: RSV1 marks a compressed one.
    pub fn of(frame: &[u8]) -> Encoding {
        match frame.first() {
            Some(first) if first & 0x40 != 0 => Encoding::Deflate,
            _ => Encoding::Plain,
        }
    }
}

impl Label for Encoding {
    const NAME: &'static str = "encoding";
    const ALL: &'static [Encoding] = &[Encoding::Plain, Encoding::Deflate];

    fn label(self) -> &'static str {
        match self {
            Encoding::Plain => "plain",
            Encoding::Deflate => "deflate",
        }
    }
}

impl Label for InflateError {
    const NAME: &'static str = "reason";
    const ALL: &'static [InflateError] = &[InflateError::Invalid, InflateError::TooLarge];

    fn label(self) -> &'static str {
        match self {
            InflateError::Invalid => "invalid",
            InflateError::TooLarge => "too_large",
        }
    }
}

/// Why a feed fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedFailure {
    /// No answer within the timeout.
    Timeout,
    /// An HTTP status other than 200.
    Status,
    /// The connection could not be made or broke.
    Connect,
    /// The body was over the size limit.
    TooLarge,
    /// The body could not be parsed.
    Parse,
}

impl Label for FeedFailure {
    const NAME: &'static str = "kind";
    const ALL: &'static [FeedFailure] = &[
        FeedFailure::Timeout,
        FeedFailure::Status,
        FeedFailure::Connect,
        FeedFailure::TooLarge,
        FeedFailure::Parse,
    ];

    fn label(self) -> &'static str {
        match self {
            FeedFailure::Timeout => "timeout",
            FeedFailure::Status => "status",
            FeedFailure::Connect => "connect",
            FeedFailure::TooLarge => "too_large",
            FeedFailure::Parse => "parse",
        }
    }
}

/// What became of a SIGHUP's reload of the TLS certificate and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new pair is served to new connections.
    Ok,
    /// The files could not be used; the previous pair is still served.
    Failed,
}

impl Label for ReloadOutcome {
    const NAME: &'static str = "outcome";
    const ALL: &'static [ReloadOutcome] = &[ReloadOutcome::Ok, ReloadOutcome::Failed];

    fn label(self) -> &'static str {
        match self {
            ReloadOutcome::Ok => "ok",
            ReloadOutcome::Failed => "failed",
        }
    }
}

/// A histogram with fixed upper bounds, in seconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

const FETCH_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5];
const TICK_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0,
];
const LAG_BOUNDS: &[f64] = &[
    0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];
const WRITE_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
const COMPRESS_BOUNDS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025];

/// Everything counted since start.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_total: u64,
    /// WebSocket upgrades completed.
    pub websocket_upgrades_total: u64,
    /// Messages queued to clients.
    pub messages_sent_total: u64,
    /// Bytes written to client sockets.
    pub bytes_sent_total: u64,
    /// Bytes of the WebSocket messages queued to clients, by encoding.
    pub message_bytes_total: ByLabel<Encoding>,
    /// Open connections that negotiated permessage-deflate.
    pub deflate_connections: u64,
    /// Histories compressed (each shared by every compressing subscriber of its second).
    pub history_compressions_total: u64,
    /// Time to compress one history.
    pub history_compression_seconds: Histogram,
    /// Compressed messages received and inflated.
    pub messages_inflated_total: u64,
    /// Compressed messages that could not be inflated, by reason.
    pub inflate_failures_total: ByLabel<InflateError>,
    /// Requests received, by action.
    pub requests_total: ByLabel<Action>,
    /// Request errors by protocol error type.
    pub request_errors_total: ByLabel<ErrorType>,
    /// Clients dropped by the server, by reason.
    pub clients_dropped_total: ByLabel<DropReason>,
    /// Ticks by outcome.
    pub ticks_total: ByLabel<TickOutcome>,
    /// Feed failures by kind.
    pub feed_errors_total: ByLabel<FeedFailure>,
    /// Feed entries for known assets that were unusable.
    pub feed_entries_rejected_total: u64,
    /// Duration of feed fetches.
    pub feed_fetch_seconds: Histogram,
    /// From a tick's wall-clock second to the start of its fan-out.
    pub tick_delay_seconds: Histogram,
    /// Time to hand one tick's points to every subscriber's socket.
    pub fanout_seconds: Histogram,
    /// Points recorded into the history.
    pub points_total: u64,
    /// Points dropped from the store's write queue because it overflowed.
    pub points_dropped_total: u64,
    /// Points written to the store.
    pub points_stored_total: u64,
    /// Store writes that failed.
    pub store_write_errors_total: u64,
    /// Duration of store writes.
    pub store_write_seconds: Histogram,
    /// Points deleted by retention.
    pub points_expired_total: u64,
    /// Times this instance became leader or stopped being one.
    pub leader_changes_total: u64,
    /// Notifications of the leader's points received.
    pub notifications_received_total: u64,
    /// On a follower: from a notified second's start to the start of its fan-out.
    pub follower_lag_seconds: Histogram,
    /// Seconds a follower polled the feed on its own, hearing nothing from the leader.
    pub fallback_polling_seconds_total: u64,
    /// Reloads of the TLS certificate and key (SIGHUP), by outcome.
    pub tls_reloads_total: ByLabel<ReloadOutcome>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            connections_total: 0,
            websocket_upgrades_total: 0,
            messages_sent_total: 0,
            bytes_sent_total: 0,
            message_bytes_total: ByLabel::default(),
            deflate_connections: 0,
            history_compressions_total: 0,
            history_compression_seconds: Histogram::new(COMPRESS_BOUNDS),
            messages_inflated_total: 0,
            inflate_failures_total: ByLabel::default(),
            requests_total: ByLabel::default(),
            request_errors_total: ByLabel::default(),
            clients_dropped_total: ByLabel::default(),
            ticks_total: ByLabel::default(),
            feed_errors_total: ByLabel::default(),
            feed_entries_rejected_total: 0,
            feed_fetch_seconds: Histogram::new(FETCH_BOUNDS),
            tick_delay_seconds: Histogram::new(TICK_BOUNDS),
            fanout_seconds: Histogram::new(TICK_BOUNDS),
            points_total: 0,
            points_dropped_total: 0,
            points_stored_total: 0,
            store_write_errors_total: 0,
            store_write_seconds: Histogram::new(WRITE_BOUNDS),
            points_expired_total: 0,
            leader_changes_total: 0,
            notifications_received_total: 0,
            follower_lag_seconds: Histogram::new(LAG_BOUNDS),
            fallback_polling_seconds_total: 0,
            tls_reloads_total: ByLabel::default(),
        }
    }
}

/// Gauges read off the reactor's state when rendering.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Open connections, any phase.
    pub connections: usize,
    /// `(asset name, subscribers)` per asset.
    pub subscriptions: Vec<(String, usize)>,
    /// Points waiting to be written to the store.
    pub write_queue_points: usize,
    /// Feed fetches running.
    pub feed_in_flight: usize,
    /// Epoch seconds of the last tick that recorded a point, 0 if none.
    pub last_tick_time: i64,
    /// 1 when the store is reachable (last write succeeded), else 0.
    pub store_up: bool,
    /// Log lines dropped because standard error did not keep up.
    pub log_lines_dropped: u64,
    /// The instance's role.
    pub role: Option<Role>,
}

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4) of counters and `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP ws_assets_{name} {help}");
            let _ = writeln!(out, "# TYPE ws_assets_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "ws_assets_{name}{labels} {value}");
            }
        };
        let one = |v: f64| vec![(String::new(), v)];
        family(
            "uptime_seconds",
            "gauge",
            "Seconds since the service started.",
            &one(gauges.uptime_seconds),
        );
        family(
            "connections",
            "gauge",
            "Open client connections (HTTP and WebSocket).",
            &one(gauges.connections as f64),
        );
        family(
            "connections_total",
            "counter",
            "Client connections accepted.",
            &one(self.connections_total as f64),
        );
        family(
            "websocket_upgrades_total",
            "counter",
            "WebSocket upgrades completed.",
            &one(self.websocket_upgrades_total as f64),
        );
        let subs: Vec<(String, f64)> = gauges
            .subscriptions
            .iter()
            .map(|(name, n)| (format!("{{asset=\"{}\"}}", escape(name)), *n as f64))
            .collect();
        family(
            "subscriptions",
            "gauge",
            "Clients subscribed, per asset.",
            &subs,
        );
        family(
            "messages_sent_total",
            "counter",
            "WebSocket messages queued to clients.",
            &one(self.messages_sent_total as f64),
        );
        family(
            "sent_bytes_total",
            "counter",
            "Bytes written to client sockets.",
            &one(self.bytes_sent_total as f64),
        );
        family(
            "message_bytes_total",
            "counter",
            "Bytes of WebSocket messages queued to clients, by encoding (plain, or deflate for clients that negotiated permessage-deflate).",
            &self.message_bytes_total.samples(),
        );
        family(
            "deflate_connections",
            "gauge",
            "Open WebSocket connections that negotiated permessage-deflate.",
            &one(self.deflate_connections as f64),
        );
        family(
            "history_compressions_total",
            "counter",
            "Histories compressed for permessage-deflate clients (each shared by every such subscriber of its second).",
            &one(self.history_compressions_total as f64),
        );
        family(
            "messages_inflated_total",
            "counter",
            "Compressed messages received from clients and inflated.",
            &one(self.messages_inflated_total as f64),
        );
        family(
            "inflate_failures_total",
            "counter",
            "Compressed messages from clients that could not be inflated, by reason.",
            &self.inflate_failures_total.samples(),
        );
        family(
            "requests_total",
            "counter",
            "Client requests, by action.",
            &self.requests_total.samples(),
        );
        family(
            "request_errors_total",
            "counter",
            "Client requests refused, by error_type.",
            &self.request_errors_total.samples(),
        );
        family(
            "clients_dropped_total",
            "counter",
            "Clients dropped by the server, by reason.",
            &self.clients_dropped_total.samples(),
        );
        family(
            "ticks_total",
            "counter",
            "Ticks, by outcome.",
            &self.ticks_total.samples(),
        );
        family(
            "feed_errors_total",
            "counter",
            "Feed fetches that failed, by kind.",
            &self.feed_errors_total.samples(),
        );
        family(
            "feed_entries_rejected_total",
            "counter",
            "Feed entries for known assets that were malformed or had unusable prices.",
            &one(self.feed_entries_rejected_total as f64),
        );
        family(
            "feed_in_flight",
            "gauge",
            "Feed fetches running.",
            &one(gauges.feed_in_flight as f64),
        );
        family(
            "last_tick_timestamp_seconds",
            "gauge",
            "Epoch seconds of the last tick that recorded a point.",
            &one(gauges.last_tick_time as f64),
        );
        family(
            "points_total",
            "counter",
            "Points recorded into the history.",
            &one(self.points_total as f64),
        );
        family(
            "points_stored_total",
            "counter",
            "Points written to the store.",
            &one(self.points_stored_total as f64),
        );
        family(
            "points_dropped_total",
            "counter",
            "Points dropped because the store's write queue overflowed.",
            &one(self.points_dropped_total as f64),
        );
        family(
            "points_expired_total",
            "counter",
            "Points deleted by retention.",
            &one(self.points_expired_total as f64),
        );
        family(
            "store_write_queue_points",
            "gauge",
            "Points waiting to be written to the store.",
            &one(gauges.write_queue_points as f64),
        );
        family(
            "store_up",
            "gauge",
            "1 when the last store write succeeded, else 0.",
            &one(if gauges.store_up { 1.0 } else { 0.0 }),
        );
        family(
            "store_write_errors_total",
            "counter",
            "Store writes that failed.",
            &one(self.store_write_errors_total as f64),
        );
        let roles: Vec<(String, f64)> = <Role as Label>::ALL
            .iter()
            .map(|r| {
                let now = if gauges.role == Some(*r) { 1.0 } else { 0.0 };
                (format!("{{role=\"{}\"}}", r.label()), now)
            })
            .collect();
        family(
            "role",
            "gauge",
            "1 for the instance's role: standalone, leader or follower.",
            &roles,
        );
        family(
            "leader_changes_total",
            "counter",
            "Times this instance became leader or stopped being one.",
            &one(self.leader_changes_total as f64),
        );
        family(
            "notifications_received_total",
            "counter",
            "Notifications of the leader's points received.",
            &one(self.notifications_received_total as f64),
        );
        family(
            "fallback_polling_seconds_total",
            "counter",
            "Seconds a follower polled the feed on its own, hearing nothing from the leader.",
            &one(self.fallback_polling_seconds_total as f64),
        );
        family(
            "tls_reloads_total",
            "counter",
            "Reloads of the TLS certificate and key on SIGHUP, by outcome (failed: the previous pair is still served).",
            &self.tls_reloads_total.samples(),
        );
        family(
            "log_lines_dropped_total",
            "counter",
            "Log lines dropped because standard error did not keep up.",
            &one(gauges.log_lines_dropped as f64),
        );
        render_histogram(
            &mut out,
            "feed_fetch_duration_seconds",
            "Duration of feed fetches.",
            &self.feed_fetch_seconds,
        );
        render_histogram(
            &mut out,
            "tick_delay_seconds",
            "From a tick's wall-clock second to the start of its fan-out (fetch included).",
            &self.tick_delay_seconds,
        );
        render_histogram(
            &mut out,
            "fanout_duration_seconds",
            "Time to write one tick's points to every subscriber.",
            &self.fanout_seconds,
        );
        render_histogram(
            &mut out,
            "follower_lag_seconds",
            "On a follower: from the start of a notified second to the start of its fan-out.",
            &self.follower_lag_seconds,
        );
        render_histogram(
            &mut out,
            "history_compression_duration_seconds",
            "Time to compress one history for permessage-deflate clients.",
            &self.history_compression_seconds,
        );
        render_histogram(
            &mut out,
            "store_write_duration_seconds",
            "Duration of store writes.",
            &self.store_write_seconds,
        );
        out
    }
}

fn render_histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP ws_assets_{name} {help}");
    let _ = writeln!(out, "# TYPE ws_assets_{name} histogram");
    let mut cumulative = 0;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "ws_assets_{name}_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "ws_assets_{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "ws_assets_{name}_sum {}", h.sum);
    let _ = writeln!(out, "ws_assets_{name}_count {}", h.count);
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_belongs_to_a_declared_family() {
        let mut m = Metrics::default();
        m.request_errors_total.add(ErrorType::ParseError);
        m.clients_dropped_total.add(DropReason::SlowConsumer);
        m.ticks_total.add(TickOutcome::Ok);
        m.feed_fetch_seconds.observe(Duration::from_millis(30));
        m.feed_fetch_seconds.observe(Duration::from_secs(10));
        let gauges = Gauges {
            subscriptions: vec![("EUR\"USD".into(), 3)],
            ..Gauges::default()
        };
        let text = m.render(&gauges);
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name == d
                        || name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
                    "undeclared sample {line}"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
            }
        }
        assert!(text.contains("ws_assets_request_errors_total{error_type=\"ParseError\"} 1"));
        assert!(text.contains("ws_assets_clients_dropped_total{reason=\"slow_consumer\"} 1"));
        assert!(text.contains("ws_assets_subscriptions{asset=\"EUR\\\"USD\"} 3"));
        assert!(text.contains("ws_assets_feed_fetch_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("ws_assets_feed_fetch_duration_seconds_bucket{le=\"+Inf\"} 2"));
    }
}
