//! One load client: its socket, where it is in connect/upgrade, the frame it is reading
//! and its stream check. Buffers exist only while something is incomplete, so an idle
//! client costs about a hundred bytes here.

use crate::check::{PointFit, StreamCheck};
use crate::scan::{Action, Scanner, Summary};
use crate::tally::{Stamp, Tally};
use crate::ws;
use std::io::{self, Write};

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, waiting for 101.
    Handshaking,
    /// WebSocket open.
    Open,
    /// Gone.
    Closed,
}

/// How a client behaves: the load's clients are all steady; a soak adds a few that
/// misbehave on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Reads everything at once; its stream is checked.
    #[default]
    Steady,
    /// Asks for a history every second but reads only a little, until the server
    /// closes it as a slow consumer.
    Slow,
    /// Sends pings without pause and never reads (not even the pongs).
    Flood,
}

/// Why a client's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server sent a close frame with this code.
    CloseFrame(u16),
    /// The server closed the TCP connection without a close frame.
    Eof,
    /// A socket error.
    Io(String),
    /// The server broke the WebSocket protocol.
    Protocol(String),
    /// The upgrade failed.
    Handshake(String),
}

impl Ending {
    /// The key under which it is counted in the report.
    pub fn reason(&self) -> String {
        match self {
            Ending::CloseFrame(code) => format!("close {code}"),
            Ending::Eof => "eof without close frame".to_string(),
            Ending::Io(e) => format!("socket error: {e}"),
            Ending::Protocol(e) => format!("protocol: {e}"),
            Ending::Handshake(e) => format!("upgrade: {e}"),
        }
    }
}

/// One WebSocket client of the load.
pub struct Client {
    /// The socket, while open.
    pub sock: Option<mio::net::TcpStream>,
    /// Life phase.
    pub phase: Phase,
    /// Start of the timed operation in flight (connect or subscribe), monotonic ns.
    pub t0_ns: u64,
    /// The stream check.
    pub check: StreamCheck,
    /// The server instance that accepted it (0 until mapped, see `instances.rs`).
    pub instance: u8,
    /// How it behaves.
    pub behaviour: Behaviour,
    /// Payload bytes of the current frame still to come.
    rx_remaining: u64,
    /// Inside a data frame's payload.
    rx_in_payload: bool,
    /// The current data frame ends its message.
    rx_fin: bool,
    /// Bytes read but not yet usable (a partial frame header or control frame, or the upgrade answer).
    pub pending: Vec<u8>,
    /// Bytes to write once the socket is writable.
    out: Vec<u8>,
    /// Scanner of a message that spans reads or frames.
    scan: Option<Box<Scanner>>,
}

impl Client {
    /// A client whose connect has been started on `sock`.
    pub fn connecting(sock: mio::net::TcpStream, t0_ns: u64) -> Client {
        Client {
            sock: Some(sock),
            phase: Phase::Connecting,
            t0_ns,
            ..Client::failed()
        }
    }

    /// A client whose connect could not even be started.
    pub fn failed() -> Client {
        Client {
            sock: None,
            phase: Phase::Closed,
            t0_ns: 0,
            check: StreamCheck::default(),
            instance: 0,
            behaviour: Behaviour::Steady,
            rx_remaining: 0,
            rx_in_payload: false,
            rx_fin: false,
            pending: Vec::new(),
            out: Vec::new(),
            scan: None,
        }
    }

    /// Writes `bytes` now if possible; what does not fit waits for writability.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if !self.out.is_empty() {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        let Some(sock) = self.sock.as_mut() else {
            return Ok(());
        };
        let mut done = 0;
        while done < bytes.len() {
            match sock.write(&bytes[done..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket accepted no bytes",
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if done < bytes.len() {
            self.out.extend_from_slice(&bytes[done..]);
        }
        Ok(())
    }

    /// Bytes waiting for the socket to take them.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Writes queued bytes after a writable event.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let queued = std::mem::take(&mut self.out);
        self.send(&queued)
    }

    /// Forgets all buffers (after the connection ended).
    pub fn release(&mut self) {
        self.sock = None;
        self.phase = Phase::Closed;
        self.pending = Vec::new();
        self.out = Vec::new();
        self.scan = None;
    }

    /// Handles WebSocket bytes; returns how many were used (the rest is an incomplete
    /// header or control frame to keep), or why the connection must end.
    pub fn frames(&mut self, buf: &[u8], at: Stamp, tally: &mut Tally) -> Result<usize, Ending> {
        let mut pos = 0;
        loop {
            if self.rx_in_payload {
                let avail = self.rx_remaining.min((buf.len() - pos) as u64) as usize;
                if avail == 0 && self.rx_remaining > 0 {
                    return Ok(pos);
                }
                self.rx_remaining -= avail as u64;
                let piece_last = self.rx_remaining == 0;
                let scan = self.scan.get_or_insert_with(Box::default);
                scan.feed(&buf[pos..pos + avail], piece_last && self.rx_fin);
                pos += avail;
                if piece_last {
                    self.rx_in_payload = false;
                    if self.rx_fin {
                        let summary = self.scan.take().map(|s| s.summary()).unwrap_or_default();
                        self.message(summary, at, tally);
                    }
                }
                continue;
            }
            let header =
                ws::parse_header(&buf[pos..]).map_err(|e| Ending::Protocol(e.to_string()))?;
            let Some(h) = header else { return Ok(pos) };
            match h.opcode {
                ws::opcode::PING | ws::opcode::PONG | ws::opcode::CLOSE => {
                    let total = h.header_len + h.len as usize;
                    if buf.len() - pos < total {
                        return Ok(pos);
                    }
                    let payload = &buf[pos + h.header_len..pos + total];
                    pos += total;
                    self.control(h.opcode, payload)?;
                }
                ws::opcode::TEXT | ws::opcode::BINARY => {
                    if self.scan.is_some() {
                        return Err(Ending::Protocol(
                            "new message inside a fragmented one".into(),
                        ));
                    }
                    pos += h.header_len;
                    let rest = (buf.len() - pos) as u64;
                    if h.fin && rest >= h.len {
                        let payload = &buf[pos..pos + h.len as usize];
                        pos += h.len as usize;
                        if h.opcode == ws::opcode::TEXT {
                            self.message(Scanner::scan_complete(payload), at, tally);
                        } else {
                            tally.other_messages += 1;
                        }
                        continue;
                    }
                    self.scan = Some(Box::default());
                    self.begin_payload(h);
                }
                _ => {
                    if self.scan.is_none() {
                        return Err(Ending::Protocol(
                            "continuation frame without a message".into(),
                        ));
                    }
                    pos += h.header_len;
                    self.begin_payload(h);
                }
            }
        }
    }

    fn begin_payload(&mut self, h: ws::Header) {
        self.rx_in_payload = true;
        self.rx_remaining = h.len;
        self.rx_fin = h.fin;
    }

    fn control(&mut self, op: u8, payload: &[u8]) -> Result<(), Ending> {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        match op {
            ws::opcode::PING => {
                ws::encode_masked(
                    &mut frame,
                    ws::opcode::PONG,
                    payload,
                    fastrand::u32(..).to_ne_bytes(),
                );
                self.send(&frame).map_err(|e| Ending::Io(e.to_string()))
            }
            ws::opcode::CLOSE => {
                let code = ws::close_code(payload);
                let echo = if payload.len() >= 2 {
                    &payload[..2]
                } else {
                    &[][..]
                };
                ws::encode_masked(
                    &mut frame,
                    ws::opcode::CLOSE,
                    echo,
                    fastrand::u32(..).to_ne_bytes(),
                );
                let _ = self.send(&frame);
                Err(Ending::CloseFrame(code))
            }
            _ => Ok(()),
        }
    }

    fn message(&mut self, s: Summary, at: Stamp, tally: &mut Tally) {
        tally.malformed += u64::from(s.malformed);
        match s.action {
            Action::Point => {
                tally.points += 1;
                if s.times != 1 {
                    tally.malformed += 1;
                    return;
                }
                let fit = self.check.point(s.asset_id, s.last_time);
                // A slow client's late points would only blur the fan-out figures.
                if matches!(fit, PointFit::Next | PointFit::Gap(_))
                    && self.behaviour == Behaviour::Steady
                {
                    tally.arrival(s.last_time, at, usize::from(self.instance));
                }
            }
            Action::AssetHistory => {
                tally.histories += 1;
                let was_subscribed = self.check.asset != 0;
                let wanted = self.check.want;
                let last = (s.times > 0).then_some(s.last_time);
                if self.check.history(last) {
                    tally.awaiting = tally.awaiting.saturating_sub(1);
                    if !was_subscribed {
                        tally.subscribed_open += 1;
                    }
                    if self.behaviour == Behaviour::Steady {
                        let lat = at.mono_ns.saturating_sub(self.t0_ns) / 1000;
                        tally
                            .history_lat_us
                            .push(u32::try_from(lat).unwrap_or(u32::MAX));
                        tally.last_history = Some(at);
                    }
                }
                let wrong = s.asset_mismatches + u32::from(s.times > 0 && s.asset_id != wanted);
                tally.history_shape(s.times, s.time_steps_bad, wrong);
            }
            Action::Error => {
                tally.error_replies += 1;
                if self.check.want != 0 {
                    // The subscribe was refused: nothing more will come for it.
                    self.check.want = 0;
                    tally.awaiting = tally.awaiting.saturating_sub(1);
                }
            }
            Action::Assets | Action::Unsubscribed | Action::Other | Action::Missing => {
                tally.other_messages += 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(payload: &str) -> Vec<u8> {
        let mut f = Vec::new();
        let p = payload.as_bytes();
        f.push(0x81);
        if p.len() < 126 {
            f.push(p.len() as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(p);
        f
    }

    fn point(asset: i32, t: i64) -> String {
        format!(
            r#"{{"action":"point","message":{{"assetName":"X","time":{t},"assetId":{asset},"value":1.5}}}}"#
        )
    }

    fn history(asset: i32, first: i64, n: i64) -> String {
        let p: Vec<String> = (first..first + n)
            .map(|t| format!(r#"{{"assetName":"X","time":{t},"assetId":{asset},"value":1.5}}"#))
            .collect();
        format!(
            r#"{{"action":"asset_history","message":{{"points":[{}]}}}}"#,
            p.join(",")
        )
    }

    fn stamp(ms: u64) -> Stamp {
        Stamp {
            mono_ns: ms * 1_000_000,
            wall_ns: ms as i64 * 1_000_000,
        }
    }

    /// Feeds `bytes` to the client in pieces of `step`, keeping leftovers as the driver does.
    fn feed(c: &mut Client, tally: &mut Tally, bytes: &[u8], step: usize) {
        for piece in bytes.chunks(step) {
            let mut buf = std::mem::take(&mut c.pending);
            buf.extend_from_slice(piece);
            let used = c.frames(&buf, stamp(5), tally).unwrap();
            c.pending = buf[used..].to_vec();
        }
    }

    #[test]
    fn history_then_points_in_any_split_are_clean() {
        let mut stream = text(&history(3, 100, 50));
        for t in 150..155 {
            stream.extend(text(&point(3, t)));
        }
        for step in [1usize, 2, 3, 9, 64, 1000, stream.len()] {
            let mut c = Client::failed();
            let mut tally = Tally {
                awaiting: 1,
                ..Tally::default()
            };
            c.check.subscribed(3);
            feed(&mut c, &mut tally, &stream, step);
            assert_eq!(tally.histories, 1, "step {step}");
            assert_eq!(tally.history_len, Some((50, 50)));
            assert_eq!(tally.points, 5);
            assert_eq!(
                (c.check.lost, c.check.dup, c.check.stale, c.check.seam_bad),
                (0, 0, 0, 0)
            );
            assert_eq!(c.check.last, Some(154));
            assert_eq!(
                (
                    tally.awaiting,
                    tally.subscribed_open,
                    tally.history_wrong_asset
                ),
                (0, 1, 0)
            );
            assert_eq!(tally.ticks.len(), 5);
            assert!(c.pending.is_empty());
        }
    }

    #[test]
    fn fragmented_message_with_a_ping_in_between_is_assembled() {
        let msg = point(1, 7);
        let (a, b) = msg.as_bytes().split_at(30);
        let mut bytes = vec![0x01, a.len() as u8];
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(&[0x89, 0x00]); // ping between fragments
        bytes.extend_from_slice(&[0x80, b.len() as u8]);
        bytes.extend_from_slice(b);
        let mut c = Client::failed();
        let mut tally = Tally::default();
        c.check.subscribed(1);
        c.check.history(Some(6));
        feed(&mut c, &mut tally, &bytes, 7);
        assert_eq!(tally.points, 1);
        assert_eq!(c.check.last, Some(7));
        assert_eq!(c.check.lost + c.check.dup, 0);
    }

    #[test]
    fn close_frame_ends_with_its_code_and_bad_frames_are_protocol_errors() {
        let mut c = Client::failed();
        let mut tally = Tally::default();
        assert_eq!(
            c.frames(&[0x88, 0x02, 0x03, 0xF0], stamp(1), &mut tally),
            Err(Ending::CloseFrame(1008))
        );
        assert!(matches!(
            c.frames(&[0x80, 0x00], stamp(1), &mut tally),
            Err(Ending::Protocol(_))
        ));
        assert!(matches!(
            c.frames(&[0x81, 0x81], stamp(1), &mut tally),
            Err(Ending::Protocol(_))
        ));
        assert_eq!(c.frames(&[0x81], stamp(1), &mut tally), Ok(0));
    }

    #[test]
    fn error_reply_releases_a_waiting_subscribe() {
        let mut c = Client::failed();
        let mut tally = Tally {
            awaiting: 1,
            ..Tally::default()
        };
        c.check.subscribed(99);
        let e = text(
            r#"{"action":"error","message":{"error_type":"UnknownAsset","error_text":"no asset 99"}}"#,
        );
        feed(&mut c, &mut tally, &e, e.len());
        assert_eq!(
            (tally.error_replies, tally.awaiting, c.check.want),
            (1, 0, 0)
        );
    }
}
