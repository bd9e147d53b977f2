//! One blocking WebSocket client used before the load: it measures start-up (first
//! successful connect plus an `assets` reply) and learns the asset ids to subscribe to.

use crate::frame::{self, FrameError};
use crate::handshake::{HandshakeError, Upgrade};
use crate::wire::SERVER_NAME;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::OpCode;

/// The probe's blocking connection: the socket, or TLS over it (`--tls`).
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Wraps a connected socket in TLS when `tls` is given.
    fn over(sock: TcpStream, tls: Option<&Arc<ClientConfig>>) -> io::Result<Stream> {
        let Some(config) = tls else {
            return Ok(Stream::Plain(sock));
        };
        let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
        let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, sock))))
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(sock) => sock,
            Stream::Tls(tls) => &tls.sock,
        }
    }

    /// Ends the sending side: close_notify with TLS, then the TCP FIN.
    fn shutdown_write(&mut self) {
        if let Stream::Tls(tls) = self {
            tls.conn.send_close_notify();
            // The probe is done either way.
            let _ = tls.flush();
        }
        let _ = self.socket().shutdown(std::net::Shutdown::Write);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(sock) => sock.read(buf),
            Stream::Tls(tls) => match tls.read(buf) {
                // The server's close without close_notify ends the probe's reading too.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(sock) => sock.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(sock) => sock.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// Why the probe could not talk to the server.
#[derive(Debug)]
pub enum ProbeError {
    /// No TCP connection within the time limit.
    Connect(SocketAddr, io::Error),
    /// The socket failed after connecting.
    Io(io::Error),
    /// The upgrade was refused.
    Handshake(HandshakeError),
    /// The server broke the framing.
    Frame(FrameError),
    /// A reply was not JSON, or the `assets` reply was missing or not understood.
    Assets(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Connect(a, e) => write!(f, "cannot connect to {a}: {e}"),
            ProbeError::Io(e) => write!(f, "probe connection failed: {e}"),
            ProbeError::Handshake(e) => write!(f, "probe upgrade failed: {e}"),
            ProbeError::Frame(e) => write!(f, "probe got a bad frame: {e}"),
            ProbeError::Assets(e) => write!(f, "bad reply: {e}"),
        }
    }
}

impl From<io::Error> for ProbeError {
    fn from(e: io::Error) -> Self {
        ProbeError::Io(e)
    }
}

/// `GET /metrics` over a fresh connection (TLS with `tls`); the response body.
pub fn scrape_metrics(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<String, ProbeError> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| ProbeError::Connect(addr, e))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = Stream::over(sock, tls)?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: wsbench\r\n\r\n")?;
    stream.flush()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// A Prometheus histogram read out of `/metrics`: for p50, p99 and the largest, the
/// smallest bucket bound (in ms) holding that share of the observations (infinite for
/// the `+Inf` bucket), and how many observations there were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramBounds {
    /// Bound of the median, ms.
    pub p50_ms: f64,
    /// Bound of the 99th percentile, ms.
    pub p99_ms: f64,
    /// Bound of the largest, ms.
    pub max_ms: f64,
    /// Observations.
    pub count: f64,
}

/// A Prometheus histogram's cumulative buckets: (upper bound in ms, count).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Buckets(Vec<(f64, f64)>);

impl Buckets {
    /// Reads histogram `name` out of `text`; `None` when absent or unreadable.
    pub fn read(text: &str, name: &str) -> Option<Buckets> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = match bound {
                "+Inf" => f64::INFINITY,
                b => (b.parse::<f64>().ok()? * 1e6).round() / 1e3,
            };
            buckets.push((bound, count.trim().parse().ok()?));
        }
        (!buckets.is_empty()).then_some(Buckets(buckets))
    }

    /// The observations made since `before` (the same histogram read earlier).
    pub fn since(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .zip(&before.0)
                .map(|(&(bound, now), &(_, then))| (bound, (now - then).max(0.0)))
                .collect(),
        )
    }
}

impl HistogramBounds {
    /// Reads histogram `name` out of `text`; `None` when absent or empty.
    pub fn read(text: &str, name: &str) -> Option<HistogramBounds> {
        HistogramBounds::of(&Buckets::read(text, name)?)
    }

    /// The bounds of `buckets`; `None` when empty.
    pub fn of(buckets: &Buckets) -> Option<HistogramBounds> {
        let buckets = &buckets.0;
        let count = buckets.last()?.1;
        if count == 0.0 {
            return None;
        }
        let bound_for = |share: f64| {
            buckets
                .iter()
                .find(|(_, n)| *n >= share * count)
                .map_or(f64::INFINITY, |(bound, _)| *bound)
        };
        Some(HistogramBounds {
            p50_ms: bound_for(0.5),
            p99_ms: bound_for(0.99),
            max_ms: bound_for(1.0),
            count,
        })
    }
}

/// Reads a Prometheus histogram out of `text` and describes it as "p50 <= a, p99 <= b,
/// max <= c (n observations)", each the smallest bucket bound holding that share.
pub fn histogram_summary(text: &str, name: &str) -> Option<String> {
    let h = HistogramBounds::read(text, name)?;
    let ms = |v: f64| {
        if v.is_finite() {
            format!("{v} ms")
        } else {
            "+Inf".to_string()
        }
    };
    Some(format!(
        "p50 <= {}, p99 <= {}, max <= {} ({} ticks)",
        ms(h.p50_ms),
        ms(h.p99_ms),
        ms(h.max_ms),
        h.count
    ))
}

/// `/metrics` (TLS with `tls`) of an instance in `role` (`follower`, `leader`) among several on one port:
/// each connection reaches one of them, so it asks until that role answers (at most
/// `tries` times).
pub fn scrape_metrics_of(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    role: &str,
    tries: usize,
) -> Option<String> {
    let marker = format!("ws_assets_role{{role=\"{role}\"}} 1");
    (0..tries)
        .filter_map(|_| scrape_metrics(addr, tls).ok())
        .find(|text| text.lines().any(|line| line.trim() == marker))
}

/// What the probe learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Asset ids from the `assets` reply, in order.
    pub asset_ids: Vec<i32>,
}

/// Connects (retrying until `limit`; TLS with `tls`), upgrades, asks for `assets`, and
/// closes politely.
pub fn probe(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    path: &str,
    limit: Duration,
) -> Result<ProbeResult, ProbeError> {
    let (mut stream, mut buf) = connect_upgraded(addr, tls, path, limit)?;
    send_text(&mut stream, br#"{"action":"assets","message":{}}"#)?;
    let asset_ids = loop {
        let v = next_json(&mut stream, &mut buf)?;
        if v.get("action").and_then(|a| a.as_str()) == Some("assets") {
            break asset_ids(&v)?;
        }
    };
    close_politely(stream);
    Ok(ProbeResult { asset_ids })
}

/// Subscribes one client to each asset in turn (reading each history) until a live
/// point arrives, then leaves: the server's code for a subscriber has run once, so
/// the memory read afterwards as a baseline holds its pages like every later reading.
pub fn warm_up(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    path: &str,
    asset_ids: &[i32],
) -> Result<(), ProbeError> {
    let (mut stream, mut buf) = connect_upgraded(addr, tls, path, Duration::from_secs(5))?;
    for id in asset_ids {
        let request = format!(r#"{{"action":"subscribe","message":{{"assetId":{id}}}}}"#);
        send_text(&mut stream, request.as_bytes())?;
        while next_json(&mut stream, &mut buf)?
            .get("action")
            .and_then(|a| a.as_str())
            != Some("asset_history")
        {}
    }
    while next_json(&mut stream, &mut buf)?
        .get("action")
        .and_then(|a| a.as_str())
        != Some("point")
    {}
    close_politely(stream);
    Ok(())
}

/// A connected, upgraded socket and the bytes read past the upgrade's answer.
fn connect_upgraded(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    path: &str,
    limit: Duration,
) -> Result<(Stream, Vec<u8>), ProbeError> {
    let start = Instant::now();
    let sock = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => break s,
            Err(e) if start.elapsed() > limit => return Err(ProbeError::Connect(addr, e)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = Stream::over(sock, tls)?;
    // The probe asks for no extension: it only times start-up and reads the assets.
    let upgrade = Upgrade::new(false);
    stream.write_all(upgrade.request(&addr.to_string(), path).as_bytes())?;
    stream.flush()?;
    let mut buf = Vec::new();
    let head = loop {
        read_more(&mut stream, &mut buf)?;
        if let Some(accepted) = upgrade.answer(&buf).map_err(ProbeError::Handshake)? {
            break accepted.head_len;
        }
    };
    buf.drain(..head);
    Ok((stream, buf))
}

fn send_text(stream: &mut Stream, text: &[u8]) -> Result<(), ProbeError> {
    send_frame(stream, frame::TEXT, text)
}

fn send_frame(stream: &mut Stream, opcode: OpCode, payload: &[u8]) -> Result<(), ProbeError> {
    let mut bytes = Vec::with_capacity(payload.len() + 14);
    frame::encode_masked(&mut bytes, opcode, payload, frame::random_mask());
    stream.write_all(&bytes)?;
    stream.flush()?;
    Ok(())
}

fn next_json(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<serde_json::Value, ProbeError> {
    let msg = next_text_message(stream, buf)?;
    serde_json::from_slice(&msg).map_err(|e| ProbeError::Assets(format!("not JSON: {e}")))
}

/// Sends a close frame and waits briefly for the server's, so the connection is gone
/// before memory or open files are read.
fn close_politely(mut stream: Stream) {
    // The probe is done either way; the close handshake only makes the server let go now.
    let _ = send_frame(&mut stream, frame::CLOSE, &1000u16.to_be_bytes());
    stream.shutdown_write();
    let _ = stream
        .socket()
        .set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

fn read_more(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<(), ProbeError> {
    let mut chunk = [0u8; 16384];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(ProbeError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        )));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads frames until one whole text message is assembled; answers pings on the way.
fn next_text_message(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<Vec<u8>, ProbeError> {
    let mut message = Vec::new();
    loop {
        let Some(h) = frame::parse_header(buf, false).map_err(ProbeError::Frame)? else {
            read_more(stream, buf)?;
            continue;
        };
        let len =
            usize::try_from(h.len).map_err(|_| ProbeError::Assets("frame too large".into()))?;
        if buf.len() < h.header_len + len {
            read_more(stream, buf)?;
            continue;
        }
        let payload: Vec<u8> = buf.drain(..h.header_len + len).skip(h.header_len).collect();
        match h.opcode {
            frame::PING => send_frame(stream, frame::PONG, &payload)?,
            frame::CLOSE => {
                return Err(ProbeError::Assets(format!(
                    "server closed with {}",
                    frame::close_code(&payload)
                )));
            }
            OpCode::Control(_) => {}
            OpCode::Data(_) => {
                message.extend_from_slice(&payload);
                if h.fin {
                    return Ok(message);
                }
            }
        }
    }
}

fn asset_ids(v: &serde_json::Value) -> Result<Vec<i32>, ProbeError> {
    let list = v
        .pointer("/message/assets")
        .and_then(|a| a.as_array())
        .ok_or_else(|| ProbeError::Assets("no message.assets array".into()))?;
    let ids: Vec<i32> = list
        .iter()
        .filter_map(|a| {
            a.get("id")
                .and_then(|i| i.as_i64())
                .and_then(|i| i32::try_from(i).ok())
        })
        .collect();
    if ids.is_empty() {
        return Err(ProbeError::Assets("no asset has an integer id".into()));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_ids_from_the_assets_reply() {
        let v = serde_json::json!({"action":"assets","message":{"assets":[{"id":1,"name":"EURUSD"},{"id":3,"name":"GBPUSD"}]}});
        assert_eq!(asset_ids(&v).unwrap(), vec![1, 3]);
        let v = serde_json::json!({"action":"assets","message":{"assets":[]}});
        assert!(asset_ids(&v).is_err());
        let v = serde_json::json!({"action":"assets","message":{}});
        assert!(asset_ids(&v).is_err());
    }

    #[test]
    fn histograms_are_summarised_by_their_bucket_bounds() {
        let text = "ws_assets_x_bucket{le=\"0.001\"} 2\nws_assets_x_bucket{le=\"0.01\"} 9\n\
                    ws_assets_x_bucket{le=\"0.1\"} 10\nws_assets_x_bucket{le=\"+Inf\"} 10\n";
        assert_eq!(
            histogram_summary(text, "ws_assets_x").unwrap(),
            "p50 <= 10 ms, p99 <= 100 ms, max <= 100 ms (10 ticks)"
        );
        assert_eq!(histogram_summary(text, "ws_assets_y"), None);
        let later = "ws_assets_x_bucket{le=\"0.001\"} 2\nws_assets_x_bucket{le=\"0.01\"} 9\n\
                     ws_assets_x_bucket{le=\"0.1\"} 14\nws_assets_x_bucket{le=\"+Inf\"} 15\n";
        let (before, after) = (
            Buckets::read(text, "ws_assets_x").unwrap(),
            Buckets::read(later, "ws_assets_x").unwrap(),
        );
        let recent = HistogramBounds::of(&after.since(&before)).unwrap();
        assert_eq!(recent.count, 5.0);
        assert_eq!((recent.p50_ms, recent.p99_ms), (100.0, f64::INFINITY));
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe(addr, None, "/", Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, ProbeError::Connect(..)), "{err}");
    }
}
