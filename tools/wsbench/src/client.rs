//! One load client: its socket, where it is in connect/upgrade, the frame it is reading
//! and its stream check. Buffers exist only while something is incomplete, so an idle
//! client costs about a hundred bytes here.
//!
//! Everything a client receives goes through [`Client::receive`]: the upgrade's answer
//! first ([`Client::start_upgrade`] sent the request; `handshake.rs` checks the answer),
//! then frames ([`Client::frames`], headers read by `frame.rs`), whose payloads are
//! scanned in place by `scan.rs`.
//!
//! On a connection that negotiated permessage-deflate, a compressed message (RSV1 on its
//! first frame) is inflated by the process's one inflater (`inflate.rs`) once all of it
//! is here, straight from the read buffer when it arrived whole, else from its payload
//! gathered on the client meanwhile; the inflated bytes are scanned like a plain
//! message's, so every check works the same on both.
//!
//! A long payload byte-identical to one verified before (every subscriber of an asset
//! gets the same history frame in the same second) is not read again: the process's
//! verifier (`verify.rs`, `repeats.rs`) hands over that payload's verdict, found by
//! comparing the whole payload when it arrived whole (or was gathered, compressed), or
//! piece by piece as a plain one arrives. Every client's own stream check runs on it
//! all the same.

use crate::check::{PointFit, StreamCheck};
use crate::frame::{self, Header};
use crate::handshake::Upgrade;
use crate::repeats::{Follower, Gathering, Repeats, Verdict};
use crate::scan::{Action, Scanner, Summary};
use crate::tally::{Stamp, Tally};
use crate::verify::{Verified, Verifier};
use crate::wire::Wire;
use std::io;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// Most compressed payload one message may gather (a compressed history is about 9 KB).
const MAX_GATHERED: usize = 16 * 1024 * 1024;

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
    /// A message that spans reads or frames, while it arrives.
    msg: Option<Box<Incoming>>,
    /// The upgrade in flight (while handshaking).
    upgrade: Option<Box<Upgrade>>,
    /// The upgrade agreed on permessage-deflate: messages may come compressed.
    deflate: bool,
}

/// A message that spans reads or frames, while it arrives.
struct Incoming {
    /// Its payload so far.
    body: Body,
    /// Its bytes on the wire so far: the headers and payloads of its frames.
    wire: u64,
}

/// A message's payload while it arrives.
enum Body {
    /// Scanned as it comes; `len` bytes so far; copied meanwhile when it is to be
    /// remembered once verified (`repeats.rs`).
    Plain {
        scan: Scanner,
        len: u64,
        copy: Option<Gathering>,
    },
    /// Plain, and so far byte-identical to a payload verified before: compared as it
    /// comes, read only if it turns out to differ.
    Repeating(Follower),
    /// Compressed: gathered until it is complete, then inflated and scanned.
    Compressed(Vec<u8>),
}

/// A whole message, as the checks and the figures need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Received {
    /// What the scanner found in its (inflated) payload.
    summary: Summary,
    /// Its bytes on the wire: frame headers and payloads.
    wire: u64,
    /// Its payload's length, inflated if it came compressed: the JSON's size.
    json: u64,
    /// It came compressed.
    compressed: bool,
    /// Its payload repeated one verified before, whose verdict it took.
    reused: bool,
}

impl Received {
    fn of(v: Verified, wire: u64, compressed: bool) -> Received {
        Received {
            summary: v.verdict.summary,
            wire,
            json: v.verdict.json,
            compressed,
            reused: v.reused,
        }
    }
}

impl Incoming {
    /// A message whose first frame has `first_len` bytes of payload (`fin`: and is its
    /// only frame): a plain one-frame message long enough to repeat a verified one is
    /// compared with those of its length, or copied to be remembered.
    fn new(compressed: bool, first_len: u64, fin: bool, repeats: &Repeats) -> Incoming {
        let body = if compressed {
            Body::Compressed(Vec::with_capacity(
                first_len.min(MAX_GATHERED as u64) as usize
            ))
        } else if let Some(follower) = repeats.follow(first_len).filter(|_| fin) {
            Body::Repeating(follower)
        } else {
            Body::Plain {
                scan: Scanner::default(),
                len: 0,
                copy: repeats.gather(first_len).filter(|_| fin),
            }
        };
        Incoming { body, wire: 0 }
    }

    /// Takes the next piece of the payload (`last`: the message ends with it).
    fn take(&mut self, piece: &[u8], last: bool, repeats: &Repeats) -> Result<(), Ending> {
        match &mut self.body {
            Body::Plain { scan, len, copy } => {
                scan.feed(piece, last);
                *len += piece.len() as u64;
                if let Some(copy) = copy {
                    copy.bytes.extend_from_slice(piece);
                }
            }
            Body::Repeating(follower) => {
                if let Some(prefix) = follower.feed(piece) {
                    // It differs: read what came so far (the remembered payload's
                    // prefix, byte for byte), then this piece, as if read all along.
                    let before = prefix.bytes();
                    let mut scan = Scanner::default();
                    scan.feed(before, false);
                    scan.feed(piece, last);
                    let len = (before.len() + piece.len()) as u64;
                    let copy = repeats.gather(len).map(|mut c| {
                        c.bytes.extend_from_slice(before);
                        c.bytes.extend_from_slice(piece);
                        c
                    });
                    self.body = Body::Plain { scan, len, copy };
                }
            }
            Body::Compressed(gathered) => {
                if gathered.len() + piece.len() > MAX_GATHERED {
                    return Err(Ending::Protocol(format!(
                        "compressed message over {MAX_GATHERED} bytes"
                    )));
                }
                gathered.extend_from_slice(piece);
            }
        }
        Ok(())
    }

    /// The whole message, once its last piece was taken.
    fn finish(self, verifier: &mut Verifier) -> Result<Received, Ending> {
        let compressed = matches!(self.body, Body::Compressed(_));
        let verified = match self.body {
            Body::Plain { scan, len, copy } => {
                let verdict = Verdict {
                    summary: scan.summary(),
                    json: len,
                };
                if let Some(copy) = copy.filter(|c| c.bytes.len() as u64 == len) {
                    verifier.repeats.remember(false, &copy.bytes, verdict);
                }
                Verified {
                    verdict,
                    reused: false,
                }
            }
            Body::Repeating(follower) => Verified {
                verdict: follower.verdict().ok_or_else(|| {
                    Ending::Protocol("message ended before its frame's length".into())
                })?,
                reused: true,
            },
            Body::Compressed(gathered) => verifier
                .whole(true, &gathered)
                .map_err(|e| Ending::Protocol(e.to_string()))?,
        };
        Ok(Received::of(verified, self.wire, compressed))
    }
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
            msg: None,
            upgrade: None,
            deflate: false,
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
        self.msg = None;
        self.upgrade = None;
    }

    /// Sends the upgrade request, once the TCP connect has completed, offering
    /// permessage-deflate if `deflate`.
    pub fn start_upgrade(&mut self, host: &str, path: &str, deflate: bool) -> io::Result<()> {
        let upgrade = Upgrade::new(deflate);
        let request = upgrade.request(host, path);
        self.upgrade = Some(Box::new(upgrade));
        self.phase = Phase::Handshaking;
        self.send(request.as_bytes())
    }

    /// Handles the bytes received (those kept from the last read first): the upgrade's
    /// answer while upgrading, then frames, a compressed message inflated by `verifier`
    /// (which knows a long payload verified before when it sees it again).
    /// Returns how many were used; the rest (an incomplete answer head, frame header or
    /// control frame) is for the next read.
    pub fn receive(
        &mut self,
        buf: &[u8],
        at: Stamp,
        tally: &mut Tally,
        verifier: &mut Verifier,
    ) -> Result<usize, Ending> {
        let mut used = 0;
        if self.phase == Phase::Handshaking {
            match self.upgrade_answer(buf, at, tally)? {
                Some(head) => used = head,
                None => return Ok(0),
            }
        }
        if self.phase == Phase::Open {
            used += self.frames(&buf[used..], at, tally, verifier)?;
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
        let answer = upgrade
            .answer(buf)
            .map_err(|e| Ending::Handshake(e.to_string()))?;
        let Some(accepted) = answer else {
            return Ok(None);
        };
        self.upgrade = None;
        self.phase = Phase::Open;
        self.deflate = accepted.deflate;
        tally.upgraded(at.mono_ns.saturating_sub(self.t0_ns), accepted.deflate);
        Ok(Some(accepted.head_len))
    }

    /// Handles WebSocket bytes; returns how many were used (the rest is an incomplete
    /// header or control frame to keep), or why the connection must end.
    pub fn frames(
        &mut self,
        buf: &[u8],
        at: Stamp,
        tally: &mut Tally,
        verifier: &mut Verifier,
    ) -> Result<usize, Ending> {
        let mut pos = 0;
        loop {
            let step = if self.rx_in_payload {
                self.payload_piece(&buf[pos..], at, tally, verifier)?
            } else {
                self.frame_start(&buf[pos..], at, tally, verifier)?
            };
            match step {
                Some(used) => pos += used,
                None => return Ok(pos),
            }
        }
    }

    /// Hands what `buf` holds of the current data frame's payload to the message; bytes
    /// used, or `None` when nothing of it has arrived yet.
    fn payload_piece(
        &mut self,
        buf: &[u8],
        at: Stamp,
        tally: &mut Tally,
        verifier: &mut Verifier,
    ) -> Result<Option<usize>, Ending> {
        let avail = self.rx_remaining.min(buf.len() as u64) as usize;
        if avail == 0 && self.rx_remaining > 0 {
            return Ok(None);
        }
        self.rx_remaining -= avail as u64;
        let frame_done = self.rx_remaining == 0;
        let Some(msg) = self.msg.as_mut() else {
            return Err(Ending::Protocol("payload outside a message".into()));
        };
        msg.take(&buf[..avail], frame_done && self.rx_fin, &verifier.repeats)?;
        if frame_done {
            self.rx_in_payload = false;
            if self.rx_fin
                && let Some(msg) = self.msg.take()
            {
                let received = msg.finish(verifier)?;
                self.message(received, at, tally);
            }
        }
        Ok(Some(avail))
    }

    /// Starts the frame at the start of `buf`: a whole control frame or a whole one-frame
    /// message is handled at once, any other data frame begins its payload. Bytes used,
    /// or `None` when its header (or control frame) is not complete yet.
    fn frame_start(
        &mut self,
        buf: &[u8],
        at: Stamp,
        tally: &mut Tally,
        verifier: &mut Verifier,
    ) -> Result<Option<usize>, Ending> {
        let header =
            frame::parse_header(buf, self.deflate).map_err(|e| Ending::Protocol(e.to_string()))?;
        let Some(h) = header else { return Ok(None) };
        let whole = buf.len() as u64 >= h.header_len as u64 + h.len;
        match h.opcode {
            OpCode::Control(_) if !whole => Ok(None),
            OpCode::Control(_) => {
                let total = h.header_len + h.len as usize;
                self.control(h.opcode, &buf[h.header_len..total])?;
                Ok(Some(total))
            }
            OpCode::Data(Data::Continue) if self.msg.is_none() => Err(Ending::Protocol(
                "continuation frame without a message".into(),
            )),
            OpCode::Data(Data::Text | Data::Binary) if self.msg.is_some() => Err(Ending::Protocol(
                "new message inside a fragmented one".into(),
            )),
            OpCode::Data(Data::Text) if h.fin && whole => {
                let total = h.header_len + h.len as usize;
                let payload = &buf[h.header_len..total];
                let verified = verifier
                    .whole(h.compressed, payload)
                    .map_err(|e| Ending::Protocol(e.to_string()))?;
                self.message(
                    Received::of(verified, total as u64, h.compressed),
                    at,
                    tally,
                );
                Ok(Some(total))
            }
            OpCode::Data(Data::Binary) if h.fin && whole => {
                tally.other_messages += 1;
                Ok(Some(h.header_len + h.len as usize))
            }
            OpCode::Data(_) => {
                self.begin_payload(h, &verifier.repeats);
                Ok(Some(h.header_len))
            }
        }
    }

    fn begin_payload(&mut self, h: Header, repeats: &Repeats) {
        let msg = self
            .msg
            .get_or_insert_with(|| Box::new(Incoming::new(h.compressed, h.len, h.fin, repeats)));
        msg.wire += h.header_len as u64 + h.len;
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

    fn message(&mut self, m: Received, at: Stamp, tally: &mut Tally) {
        let s = m.summary;
        tally.compressed_messages += u64::from(m.compressed);
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
                tally.reused_verdicts += u64::from(m.reused);
                tally.history_wire_bytes += m.wire;
                tally.history_json_bytes += m.json;
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

    use crate::inflate::compress_message;

    /// A server frame: `first` is its first byte (FIN, RSV1, opcode).
    fn server_frame(first: u8, p: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        if p.len() < 126 {
            f.push(p.len() as u8);
        } else if p.len() <= 0xFFFF {
            f.push(126);
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(p.len() as u64).to_be_bytes());
        }
        f.extend_from_slice(p);
        f
    }

    fn text(payload: &str) -> Vec<u8> {
        server_frame(0x81, payload.as_bytes())
    }

    /// A message compressed as the server sends it: one final text frame with RSV1.
    fn compressed_text(payload: &str) -> Vec<u8> {
        server_frame(0xC1, &compress_message(payload.as_bytes()))
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

    /// Feeds `bytes` to the client in pieces of `step`, keeping leftovers as the driver
    /// does; the first error ends it.
    fn try_feed(
        c: &mut Client,
        tally: &mut Tally,
        bytes: &[u8],
        step: usize,
    ) -> Result<(), Ending> {
        let mut verifier = Verifier::default();
        for piece in bytes.chunks(step) {
            let mut buf = std::mem::take(&mut c.pending);
            buf.extend_from_slice(piece);
            let used = c.frames(&buf, stamp(5), tally, &mut verifier)?;
            c.pending = buf[used..].to_vec();
        }
        Ok(())
    }

    fn feed(c: &mut Client, tally: &mut Tally, bytes: &[u8], step: usize) {
        try_feed(c, tally, bytes, step).unwrap();
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
            c.start_upgrade("127.0.0.1:1", "/api/v1/websocket", false)
                .unwrap();
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
                let used = c
                    .receive(&buf, stamp(9), &mut tally, &mut Verifier::default())
                    .unwrap();
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
        c.start_upgrade("127.0.0.1:1", "/", false).unwrap();
        let r = c.receive(
            b"HTTP/1.1 503 Busy\r\n\r\n",
            stamp(1),
            &mut tally,
            &mut Verifier::default(),
        );
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

    /// One call of `frames` on `bytes`, with a fresh verifier.
    fn frames(c: &mut Client, bytes: &[u8], tally: &mut Tally) -> Result<usize, Ending> {
        c.frames(bytes, stamp(1), tally, &mut Verifier::default())
    }

    #[test]
    fn close_frame_ends_with_its_code_and_bad_frames_are_protocol_errors() {
        let mut c = Client::failed();
        let mut tally = Tally::default();
        assert_eq!(
            frames(&mut c, &[0x88, 0x02, 0x03, 0xF0], &mut tally),
            Err(Ending::CloseFrame(1008))
        );
        assert!(matches!(
            frames(&mut c, &[0x80, 0x00], &mut tally),
            Err(Ending::Protocol(_))
        ));
        // A masked server frame, found once its header (with the mask) is complete.
        assert_eq!(frames(&mut c, &[0x81, 0x81, 1, 2], &mut tally), Ok(0));
        assert!(matches!(
            frames(&mut c, &[0x81, 0x81, 1, 2, 3, 4], &mut tally),
            Err(Ending::Protocol(_))
        ));
        assert_eq!(frames(&mut c, &[0x81], &mut tally), Ok(0));
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

    /// What a subscribed client's tally and check say after `stream`, fed in pieces of
    /// `step`, with or without permessage-deflate agreed.
    fn after(stream: &[u8], step: usize, deflate: bool) -> (Tally, Client) {
        let mut c = Client::failed();
        c.deflate = deflate;
        let mut tally = Tally {
            awaiting: 1,
            ..Tally::default()
        };
        c.check.subscribed(3);
        feed(&mut c, &mut tally, stream, step);
        (tally, c)
    }

    #[test]
    fn a_compressed_history_in_any_split_scans_as_the_plain_one() {
        let h = history(3, 1_764_329_401, 1800);
        let mut plain = text(&h);
        let mut compressed = compressed_text(&h);
        for t in 1_764_331_201..1_764_331_204 {
            // Points come plain on either connection.
            plain.extend(text(&point(3, t)));
            compressed.extend(text(&point(3, t)));
        }
        let (p, pc) = after(&plain, plain.len(), false);
        assert_eq!(p.history_len, Some((1800, 1800)));
        assert_eq!((p.points, p.compressed_messages), (3, 0));
        assert_eq!(p.history_json_bytes, h.len() as u64);
        assert_eq!(p.history_wire_bytes, h.len() as u64 + 10); // an 8-byte length
        for step in [1usize, 2, 3, 7, 64, 1000, 4096, compressed.len()] {
            let (t, c) = after(&compressed, step, true);
            assert_eq!(
                (
                    t.histories,
                    t.history_len,
                    t.history_gaps,
                    t.history_wrong_asset
                ),
                (1, Some((1800, 1800)), 0, 0),
                "step {step}"
            );
            assert_eq!((t.points, t.malformed, t.awaiting), (3, 0, 0));
            assert_eq!(c.check.last, pc.check.last);
            assert_eq!((c.check.lost, c.check.dup, c.check.seam_bad), (0, 0, 0));
            assert_eq!(t.compressed_messages, 1);
            // The same JSON, a small part of it on the wire.
            assert_eq!(t.history_json_bytes, p.history_json_bytes);
            assert!(
                t.history_wire_bytes * 5 < p.history_wire_bytes,
                "{} of {}",
                t.history_wire_bytes,
                p.history_wire_bytes
            );
            assert!(c.pending.is_empty() && c.msg.is_none());
        }
    }

    #[test]
    fn a_compressed_message_over_two_frames_with_a_ping_between_is_inflated_whole() {
        let h = history(3, 100, 200);
        let z = compress_message(h.as_bytes());
        let (a, b) = z.split_at(z.len() / 3);
        let mut stream = server_frame(0x41, a); // RSV1, text, not final
        stream.extend(server_frame(0x89, b"hi")); // a ping between the fragments
        stream.extend(server_frame(0x80, b)); // the final continuation, no RSV1
        for step in [1usize, 5, 100, stream.len()] {
            let (t, c) = after(&stream, step, true);
            assert_eq!(
                (t.histories, t.history_len),
                (1, Some((200, 200))),
                "step {step}"
            );
            assert_eq!(t.history_wire_bytes, stream.len() as u64 - 4);
            assert_eq!(c.check.last, Some(299));
        }
    }

    /// A subscribed client (to asset 3) fed `stream` in pieces of `step` through the
    /// shared `verifier`: its tally and itself, or the first error.
    fn try_through(
        v: &mut Verifier,
        stream: &[u8],
        step: usize,
        deflate: bool,
    ) -> Result<(Tally, Client), Ending> {
        let mut c = Client::failed();
        c.deflate = deflate;
        let mut tally = Tally {
            awaiting: 1,
            ..Tally::default()
        };
        c.check.subscribed(3);
        for piece in stream.chunks(step) {
            let mut buf = std::mem::take(&mut c.pending);
            buf.extend_from_slice(piece);
            let used = c.frames(&buf, stamp(5), &mut tally, v)?;
            c.pending = buf[used..].to_vec();
        }
        Ok((tally, c))
    }

    fn through(v: &mut Verifier, stream: &[u8], step: usize, deflate: bool) -> (Tally, Client) {
        try_through(v, stream, step, deflate).unwrap()
    }

    /// 1800 points of asset 3 from `first`, their values varied as real ones are (so the
    /// history compresses no better than a real one), with one time changed if `gap`.
    fn varied_history(first: i64, gap: Option<(i64, i64)>) -> String {
        let p: Vec<String> = (first..first + 1800)
            .map(|t| {
                let v = (t * 7_919 % 100_003) as f64 / 997.0;
                let t = match gap {
                    Some((was, is)) if was == t => is,
                    _ => t,
                };
                format!(r#"{{"assetName":"X","time":{t},"assetId":3,"value":{v}}}"#)
            })
            .collect();
        format!(
            r#"{{"action":"asset_history","message":{{"points":[{}]}}}}"#,
            p.join(",")
        )
    }

    /// `json` as one frame, compressed or not, then live points of asset 3 from `next`.
    fn then_points(json: &str, next: i64, compress: bool) -> Vec<u8> {
        let mut s = if compress {
            compressed_text(json)
        } else {
            text(json)
        };
        for t in next..next + 3 {
            s.extend(text(&point(3, t)));
        }
        s
    }

    #[test]
    fn a_repeated_history_takes_the_verdict_and_every_client_is_still_checked() {
        for (deflate, step) in [
            (false, 1_000),
            (false, 1 << 20),
            (true, 1_000),
            (true, 1 << 20),
        ] {
            let case = format!("deflate {deflate}, pieces of {step}");
            let mut v = Verifier::default();
            let h = varied_history(1_000, None);
            let clean = then_points(&h, 2_800, deflate);
            let (t, c) = through(&mut v, &clean, step, deflate);
            assert_eq!((t.histories, t.reused_verdicts), (1, 0), "{case}");
            // The same history again, for a second client: its verdict is reused ...
            let (t2, c2) = through(&mut v, &clean, step, deflate);
            assert_eq!((t2.histories, t2.reused_verdicts), (1, 1), "{case}");
            assert_eq!(t2.history_len, Some((1800, 1800)));
            assert_eq!(
                (t2.history_json_bytes, t2.history_wire_bytes),
                (t.history_json_bytes, t.history_wire_bytes)
            );
            assert_eq!(c2.check, c.check);
            assert_eq!((c2.check.lost, c2.check.seam_bad), (0, 0));
            assert_eq!(c2.check.last, Some(2_802));
            // ... and each client's own points are still checked: one lost at the seam.
            let (t3, c3) = through(&mut v, &then_points(&h, 2_801, deflate), step, deflate);
            assert_eq!(t3.reused_verdicts, 1, "{case}");
            assert_eq!((c3.check.lost, c3.check.seam_bad), (1, 1), "{case}");
            // A history of the same length one byte apart (a gap late in it) is read
            // afresh and caught, and caught again when it repeats.
            let gap = varied_history(1_000, Some((2_700, 2_900)));
            assert_eq!(gap.len(), h.len());
            for reused in [0, 1] {
                let (t4, _) = through(&mut v, &then_points(&gap, 2_800, deflate), step, deflate);
                assert_eq!((t4.reused_verdicts, t4.history_gaps), (reused, 2), "{case}");
            }
        }
    }

    #[test]
    fn a_repeat_that_does_not_inflate_is_still_refused() {
        let mut v = Verifier::default();
        let z = compress_message(varied_history(1_000, None).as_bytes());
        assert!(z.len() >= crate::repeats::MIN_BYTES);
        let (t, _) = through(&mut v, &server_frame(0xC1, &z), 500, true);
        assert_eq!(t.histories, 1);
        // The same length, a first block of a type that does not exist.
        let mut bad = z.clone();
        bad[0] |= 0b110;
        for step in [500, 1 << 20] {
            let r = try_through(&mut v, &server_frame(0xC1, &bad), step, true);
            assert!(
                matches!(&r, Err(Ending::Protocol(why)) if why.contains("inflate")),
                "step {step}"
            );
        }
    }

    #[test]
    fn rsv1_where_it_may_not_be_is_a_protocol_error() {
        let z = compressed_text(&history(3, 100, 5));
        // Not negotiated: RSV1 is a protocol error, whatever the frame holds.
        let mut c = Client::failed();
        let r = try_feed(&mut c, &mut Tally::default(), &z, z.len());
        assert!(
            matches!(&r, Err(Ending::Protocol(why)) if why.contains("RSV1")),
            "{r:?}"
        );
        // Negotiated, but on a continuation frame.
        let mut stream = server_frame(0x01, b"{\"act");
        stream.extend(server_frame(0xC0, b"ion\":1}"));
        let mut c = Client::failed();
        c.deflate = true;
        let r = try_feed(&mut c, &mut Tally::default(), &stream, stream.len());
        assert!(matches!(r, Err(Ending::Protocol(_))), "{r:?}");
        // Negotiated, but the data does not inflate.
        let mut c = Client::failed();
        c.deflate = true;
        let bad = server_frame(0xC1, &[0xFF, 0xFF, 0xFF]);
        let r = try_feed(&mut c, &mut Tally::default(), &bad, 1);
        assert!(
            matches!(&r, Err(Ending::Protocol(why)) if why.contains("inflate")),
            "{r:?}"
        );
    }

    #[test]
    fn an_upgrade_that_agrees_on_deflate_reads_compressed_frames() {
        let mut c = Client::failed();
        let mut tally = Tally {
            in_progress: 1,
            ..Tally::default()
        };
        c.start_upgrade("127.0.0.1:1", "/", true).unwrap();
        let accept = c.upgrade.as_ref().unwrap().expected_accept();
        let mut stream = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate; \
             server_no_context_takeover; client_no_context_takeover\r\n\r\n"
        )
        .into_bytes();
        c.check.subscribed(2);
        tally.awaiting = 1;
        stream.extend(compressed_text(&history(2, 10, 3)));
        let used = c
            .receive(&stream, stamp(3), &mut tally, &mut Verifier::default())
            .unwrap();
        assert_eq!(used, stream.len());
        assert!(c.deflate);
        assert_eq!((tally.connected, tally.compressing), (1, 1));
        assert_eq!((tally.histories, tally.compressed_messages), (1, 1));
    }
}
