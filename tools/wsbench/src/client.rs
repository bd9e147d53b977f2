//! One load client: its socket, where it is in connect/upgrade, the frame it is reading
//! and its stream check. Buffers exist only while something is incomplete, so an idle
//! client costs about a hundred bytes here.
//!
//! Everything a client receives goes through [`Client::receive`]: the upgrade's answer
//! first ([`Client::start_upgrade`] sent the request; `handshake.rs` checks the answer),
//! then frames ([`Client::frames`], headers read by `frame.rs`), whose payloads are
//! scanned in place by `scan.rs`.

use crate::check::{PointFit, StreamCheck};
use crate::frame::{self, Header};
use crate::handshake::Upgrade;
use crate::scan::{Action, Scanner, Summary};
use crate::tally::{Stamp, Tally};
use crate::wire::Wire;
use std::io;
use tungstenite::protocol::frame::coding::{Data, OpCode};

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
    /// The connection (the socket, or TLS over it), while open.
    pub sock: Option<Wire>,
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
    /// The upgrade in flight (while handshaking).
    upgrade: Option<Box<Upgrade>>,
}

impl Client {
    /// A client whose connect has been started on `sock`.
    pub fn connecting(sock: Wire, t0_ns: u64) -> Client {
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
            upgrade: None,
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

    /// Sends one masked frame carrying `payload` (see [`Client::send`]).
    pub fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(payload.len() + 14);
        frame::encode_masked(&mut bytes, opcode, payload, frame::random_mask());
        self.send(&bytes)
    }

    /// Bytes waiting for the socket to take them (at least 1 while TLS holds records).
    pub fn queued(&self) -> usize {
        let held = self.sock.as_ref().is_some_and(Wire::holds_output);
        self.out.len().max(usize::from(held))
    }

    /// Writes queued bytes after a writable event.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(wire) = self.sock.as_mut() {
            wire.flush()?;
        }
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
        self.upgrade = None;
    }

    /// Sends the upgrade request, once the TCP connect has completed.
    pub fn start_upgrade(&mut self, host: &str, path: &str) -> io::Result<()> {
        let upgrade = Upgrade::new();
        let request = upgrade.request(host, path);
        self.upgrade = Some(Box::new(upgrade));
        self.phase = Phase::Handshaking;
        self.send(request.as_bytes())
    }

    /// Handles the bytes received (those kept from the last read first): the upgrade's
    /// answer while upgrading, then frames. Returns how many were used; the rest (an
    /// incomplete answer head, frame header or control frame) is for the next read.
    pub fn receive(&mut self, buf: &[u8], at: Stamp, tally: &mut Tally) -> Result<usize, Ending> {
        let mut used = 0;
        if self.phase == Phase::Handshaking {
            match self.upgrade_answer(buf, at, tally)? {
                Some(head) => used = head,
                None => return Ok(0),
            }
        }
        if self.phase == Phase::Open {
            used += self.frames(&buf[used..], at, tally)?;
        }
        Ok(used)
    }

    /// Keeps `rest` (bytes not yet usable) for the next read, holding no buffer when
    /// there is nothing to keep.
    pub fn keep(&mut self, rest: &[u8]) {
        if rest.is_empty() {
            if self.pending.capacity() > 0 {
                self.pending = Vec::new();
            }
        } else {
            self.pending.clear();
            self.pending.extend_from_slice(rest);
        }
    }

    /// Checks the upgrade's answer head; its length once it is complete and accepted.
    fn upgrade_answer(
        &mut self,
        buf: &[u8],
        at: Stamp,
        tally: &mut Tally,
    ) -> Result<Option<usize>, Ending> {
        let Some(upgrade) = self.upgrade.as_deref() else {
            return Err(Ending::Handshake("no upgrade request was sent".into()));
        };
        let head = upgrade
            .answer(buf)
            .map_err(|e| Ending::Handshake(e.to_string()))?;
        if head.is_some() {
            self.upgrade = None;
            self.phase = Phase::Open;
            tally.upgraded(at.mono_ns.saturating_sub(self.t0_ns));
        }
        Ok(head)
    }

    /// Handles WebSocket bytes; returns how many were used (the rest is an incomplete
    /// header or control frame to keep), or why the connection must end.
    pub fn frames(&mut self, buf: &[u8], at: Stamp, tally: &mut Tally) -> Result<usize, Ending> {
        let mut pos = 0;
        loop {
            let step = if self.rx_in_payload {
                self.payload_piece(&buf[pos..], at, tally)
            } else {
                self.frame_start(&buf[pos..], at, tally)?
            };
            match step {
                Some(used) => pos += used,
                None => return Ok(pos),
            }
        }
    }

    /// Feeds what `buf` holds of the current data frame's payload to the message's
    /// scanner; bytes used, or `None` when nothing of it has arrived yet.
    fn payload_piece(&mut self, buf: &[u8], at: Stamp, tally: &mut Tally) -> Option<usize> {
        let avail = self.rx_remaining.min(buf.len() as u64) as usize;
        if avail == 0 && self.rx_remaining > 0 {
            return None;
        }
        self.rx_remaining -= avail as u64;
        let frame_done = self.rx_remaining == 0;
        let scan = self.scan.get_or_insert_with(Box::default);
        scan.feed(&buf[..avail], frame_done && self.rx_fin);
        if frame_done {
            self.rx_in_payload = false;
            if self.rx_fin {
                let summary = self.scan.take().map(|s| s.summary()).unwrap_or_default();
                self.message(summary, at, tally);
            }
        }
        Some(avail)
    }

    /// Starts the frame at the start of `buf`: a whole control frame or a whole one-frame
    /// message is handled at once, any other data frame begins its payload. Bytes used,
    /// or `None` when its header (or control frame) is not complete yet.
    fn frame_start(
        &mut self,
        buf: &[u8],
        at: Stamp,
        tally: &mut Tally,
    ) -> Result<Option<usize>, Ending> {
        let header = frame::parse_header(buf).map_err(|e| Ending::Protocol(e.to_string()))?;
        let Some(h) = header else { return Ok(None) };
        let whole = buf.len() as u64 >= h.header_len as u64 + h.len;
        match h.opcode {
            OpCode::Control(_) if !whole => Ok(None),
            OpCode::Control(_) => {
                let total = h.header_len + h.len as usize;
                self.control(h.opcode, &buf[h.header_len..total])?;
                Ok(Some(total))
            }
            OpCode::Data(Data::Continue) if self.scan.is_none() => Err(Ending::Protocol(
                "continuation frame without a message".into(),
            )),
            OpCode::Data(Data::Text | Data::Binary) if self.scan.is_some() => Err(
                Ending::Protocol("new message inside a fragmented one".into()),
            ),
            OpCode::Data(Data::Text) if h.fin && whole => {
                let total = h.header_len + h.len as usize;
                self.message(Scanner::scan_complete(&buf[h.header_len..total]), at, tally);
                Ok(Some(total))
            }
            OpCode::Data(Data::Binary) if h.fin && whole => {
                tally.other_messages += 1;
                Ok(Some(h.header_len + h.len as usize))
            }
            OpCode::Data(_) => {
                self.begin_payload(h);
                Ok(Some(h.header_len))
            }
        }
    }

    fn begin_payload(&mut self, h: Header) {
        if self.scan.is_none() {
            self.scan = Some(Box::default());
        }
        self.rx_in_payload = true;
        self.rx_remaining = h.len;
        self.rx_fin = h.fin;
    }

    /// Answers a ping, or ends the connection on a close frame (echoing its code).
    fn control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), Ending> {
        match opcode {
            frame::PING => self
                .send_frame(frame::PONG, payload)
                .map_err(|e| Ending::Io(e.to_string())),
            frame::CLOSE => {
                let echo = payload.get(..2).unwrap_or_default();
                // The connection ends either way; the echo is only a courtesy.
                let _ = self.send_frame(frame::CLOSE, echo);
                Err(Ending::CloseFrame(frame::close_code(payload)))
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
    fn the_upgrade_answer_and_the_first_frames_in_any_split_are_used() {
        for step in [1usize, 7, 64, 10_000] {
            let mut c = Client::failed();
            let mut tally = Tally {
                in_progress: 1,
                awaiting: 1,
                ..Tally::default()
            };
            // No socket: the request goes nowhere, the upgrade is in flight all the same.
            c.start_upgrade("127.0.0.1:1", "/api/v1/websocket").unwrap();
            assert_eq!(c.phase, Phase::Handshaking);
            let accept = c.upgrade.as_ref().unwrap().expected_accept();
            let mut stream = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            c.check.subscribed(2);
            stream.extend(text(&history(2, 10, 3)));
            for piece in stream.chunks(step) {
                let mut buf = std::mem::take(&mut c.pending);
                buf.extend_from_slice(piece);
                let used = c.receive(&buf, stamp(9), &mut tally).unwrap();
                c.keep(&buf[used..]);
            }
            assert_eq!(c.phase, Phase::Open, "step {step}");
            assert!(c.upgrade.is_none());
            assert_eq!((tally.connected, tally.open, tally.in_progress), (1, 1, 0));
            assert_eq!(tally.connect_lat_us.len(), 1);
            assert_eq!((tally.histories, tally.awaiting), (1, 0));
            assert!(c.pending.is_empty());
        }
    }

    #[test]
    fn a_refused_upgrade_ends_the_client() {
        let mut c = Client::failed();
        let mut tally = Tally::default();
        c.start_upgrade("127.0.0.1:1", "/").unwrap();
        let r = c.receive(b"HTTP/1.1 503 Busy\r\n\r\n", stamp(1), &mut tally);
        assert!(matches!(r, Err(Ending::Handshake(_))), "{r:?}");
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
        // A masked server frame, found once its header (with the mask) is complete.
        assert_eq!(c.frames(&[0x81, 0x81, 1, 2], stamp(1), &mut tally), Ok(0));
        assert!(matches!(
            c.frames(&[0x81, 0x81, 1, 2, 3, 4], stamp(1), &mut tally),
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
